"""One batch of decoded images -> every classifier's scores -> output rows.

The one scoring code of batch prediction: the local path (`engine.workflow`'s predict and evaluate,
a DataLoader in one process tree) and the Ray Data path (`engine.ray_predict`, a model actor per
GPU/CPU) both call `score_pixels` on a batch of pixels and `predict_rows` / `error_row` to turn
the scores into rows, so both write the same rows for the same files.

Row fields: ``file``, ``status`` ("ok" | "error"), ``error`` (the reason, "" when ok), and per
classifier (``tuned``, ``handcrafted``) ``<name>_top_k`` ``[[category, score]]`` (best first) and
``<name>_scores`` ``{category: score}``. Scores are float32 values written as the shortest decimal
that reads back to the same float32.
"""
from __future__ import annotations

from typing import Sequence


def score_pixels(backbone, classifiers: dict, pixels) -> dict:
    """``{name: scores [B, N] float32 CPU}`` of pixels [B, 3, H, W]: one image-encoder pass feeds
    every classifier (one per dense-feature setting, ``Classifier.dense_positional``, when the
    classifiers differ there). The pixels must be prepared as the classifiers ask
    (``Classifier.image_resize``). Call under ``torch.inference_mode()``."""
    pix = pixels.to(backbone.device, non_blocking=True)
    out, features = {}, {}
    for name, c in classifiers.items():
        positional = bool(getattr(c, "dense_positional", False))
        if positional not in features:
            features[positional] = backbone.image_features(pix, dense_positional=positional)
        out[name] = c.scores(*features[positional]).float().cpu()
    return out


def f32(v) -> float:
    """A float32 score as the shortest decimal that reads back to the same float32 (9 digits)."""
    return float(f"{float(v):.9g}")


def top_k_pairs(row, categories: Sequence[str], k: int) -> list[list]:
    from engine.classifier import top_k

    return [[name, f32(score)] for name, score in top_k(row, categories, k)]


def predict_rows(categories: list[str], indices, scores: dict, files, top_k: int) -> list[dict]:
    """Output rows (dicts) of one batch: file, status, top-k of each classifier, all scores.
    ``indices[j]`` is the position in ``files`` of the image in row ``j`` of every score tensor."""
    rows = []
    arrays = {name: sc.numpy() for name, sc in scores.items()}
    for j, i in enumerate(indices):
        row = {"file": str(files[i]), "status": "ok", "error": ""}
        for name, arr in arrays.items():
            vals = arr[j]
            row[f"{name}_top_k"] = top_k_pairs(vals, categories, top_k)
            row[f"{name}_scores"] = dict(zip(categories, [f32(v) for v in vals.tolist()]))
        rows.append(row)
    return rows


def error_row(file: str, reason: str) -> dict:
    """The row of a file that could not be read."""
    return {"file": str(file), "status": "error", "error": reason}
