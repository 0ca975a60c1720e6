"""Confidences a person can read (engine.calibration): fitted when the project is evaluated on a
labelled set, kept with that evaluation, and used to show each image's labels as 0-1 confidences
with a per-category threshold.

- :func:`fit_calibrations` (called by the evaluation): one calibration per classifier scored.
- :func:`project_calibrations`: the calibrations that apply now - the tuned one only when it was
  fitted on the classifier in use (a new training needs a new evaluation), the hand-crafted one
  from the latest evaluation that has one.
- :func:`image_cards`: prediction rows -> what the Classify gallery shows (name, thumbnail,
  chips per classifier).
- :func:`confidence_note`: what the numbers mean, in plain words.
"""
from __future__ import annotations

from engine.calibration import Calibration, fit_calibration, label_chips
from engine.thumbnails import thumbnail_uri
from engine.workflow.base import owned


def fit_calibrations(scores: dict, targets, categories: list[str], source: str) -> dict:
    """``{classifier name: Calibration.to_dict()}`` for every classifier whose scores can be
    calibrated on these labels (a set without a present-and-absent category gives none)."""
    out = {}
    for name, sc in scores.items():
        try:
            out[name] = fit_calibration(sc, targets, categories, source=source).to_dict()
        except ValueError:
            continue
    return out


@owned
def project_calibrations(store, project_id: int) -> dict[str, Calibration]:
    """The calibrations that apply to the project's classifiers now (see the module doc)."""
    classifiers = store.list_classifiers(project_id)
    in_use = classifiers[-1].id if classifiers else None
    cats = [c.name for c in store.list_categories(project_id)]
    out: dict[str, Calibration] = {}
    for ev in reversed(store.list_evaluations(project_id)):
        fitted = (ev.metrics or {}).get("calibration") or {}
        for name, d in fitted.items():
            if name in out or list(d.get("categories", [])) != cats:
                continue
            if name == "tuned" and (ev.classifier_id is None or ev.classifier_id != in_use):
                continue
            out[name] = Calibration.from_dict(d)
        if len(out) == 2:
            break
    return out


def image_cards(rows: list[dict], names: dict[str, str], k: int, calibrations: dict[str, Calibration],
                kinds=("tuned", "handcrafted")) -> list[dict]:
    """One card per prediction row: ``{"name", "thumb" (data URI or None), "error",
    "chips": {kind: [(category, confidence, over threshold)]}}``; ``names`` maps a row's file to
    the name to show (e.g. its path inside its zip)."""
    cards = []
    for r in rows:
        name = names.get(str(r["file"]), str(r["file"]))
        if r.get("status") != "ok":
            cards.append({"name": name, "thumb": None, "error": r.get("error") or "could not be scored",
                          "chips": {}})
            continue
        chips = {kind: label_chips(r[f"{kind}_scores"], k, calibrations.get(kind))
                 for kind in kinds if f"{kind}_scores" in r}
        cards.append({"name": name, "thumb": thumbnail_uri(r["file"]), "error": None, "chips": chips})
    return cards


def confidence_note(calibrations: dict[str, Calibration], main: str) -> str:
    """One or two plain sentences: what the number on a chip means for the ``main`` classifier."""
    cal = calibrations.get(main)
    if cal is None:
        return ("Not calibrated yet: a chip's number places the category between this image's "
                "weakest (0) and strongest (1) match; it is not a probability, so no chip is bold. "
                "Evaluate the project on a few labelled images (step 7) to turn the numbers into "
                "probabilities with a threshold per category.")
    return (f"Confidence = the estimated chance (0 to 1) that the image shows the category, "
            f"calibrated on the labelled set {cal.source} ({cal.images} images, step 7). Bold chips "
            f"are over their category's threshold, where that chance reaches 0.5.")
