"""What a visitor uploads, scored or evaluated (engine.uploads turns the files into images or a
labelled set; the server-path routes stay in predict and evaluate for local use)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from engine.uploads import expand_image_uploads, labelled_set_from_uploads
from engine.workflow.base import owned
from engine.workflow.confidence import confidence_note, image_cards, project_calibrations
from engine.workflow.evaluate import evaluate_project
from engine.workflow.predict import predict_files


@dataclass
class ClassifiedUploads:
    """Uploads scored: ``cards`` for the gallery, ``rows`` (every score, for downloads; ``file``
    is the shown name), ``has_classifier`` (the project has a tuned classifier, whether or not an
    image could be scored), ``scored``/``failed`` counts, ``note`` (what a chip's number means)."""

    cards: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    has_classifier: bool = False
    scored: int = 0
    failed: int = 0
    note: str = ""


@owned
def classify_uploads(store, project_id: int, paths: Sequence, workdir: str | Path, k: int = 3,
                     backbone_spec=None, kinds=("tuned", "handcrafted")) -> ClassifiedUploads:
    """Score uploaded images and zips (a refused zip member is reported, the rest scored) with the
    tuned classifier (when there is one) and the hand-crafted baseline; ``kinds`` the chip rows
    each card gets, in order."""
    ups = expand_image_uploads(paths, workdir)
    names = {str(f): n for f, n in zip(ups.files, ups.names)}
    names.update({str(Path(f).resolve()): n for f, n in zip(ups.files, ups.names)})  # rows name resolved paths
    rows: list[dict] = []
    if ups.files:
        rows = predict_files(store, project_id, ups.files, output=None, backbone_spec=backbone_spec,
                             top_k=k).rows
    rows += [{"file": name, "status": "error", "error": reason} for name, reason in ups.refused]
    has_tuned = bool(store.list_classifiers(project_id))
    calibrations = project_calibrations(store, project_id)
    kinds = [kd for kd in kinds if kd != "tuned" or has_tuned]
    cards = image_cards(rows, names, k, calibrations, kinds)
    shown_rows = [{**r, "file": names.get(str(r["file"]), str(r["file"]))} for r in rows]
    n_bad = sum(r["status"] != "ok" for r in rows)
    return ClassifiedUploads(cards, shown_rows, has_tuned, len(rows) - n_bad, n_bad,
                             confidence_note(calibrations, kinds[0] if kinds else "handcrafted"))


@owned
def evaluate_uploads(store, project_id: int, paths: Sequence, workdir: str | Path, backbone_spec=None,
                     k: int = 3, on_progress: Callable | None = None, should_stop: Callable | None = None) -> dict:
    """:func:`evaluate_project` on an uploaded labelled set: one zip, or a CSV/TSV (or COCO JSON)
    plus its images. The result's ``dataset`` is the uploaded file's name."""
    cats = store.list_categories(project_id)
    names = [c.name for c in cats]
    aliases = {c.name: list(c.synonyms or []) for c in cats}
    data = labelled_set_from_uploads(paths, workdir, names, aliases)
    ups = [Path(str(getattr(p, "name", p))) for p in paths]
    data.source = next((p.name for p in ups if p.suffix.lower() == ".zip"), Path(data.source).name)
    return evaluate_project(store, project_id, data, backbone_spec=backbone_spec, k=k,
                            on_progress=on_progress, should_stop=should_stop)
