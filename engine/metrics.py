"""Multi-label evaluation: mAP, per-category AP, and F1 at top-k (METHOD.md section 6, paper 4.1).

Inputs are score and target matrices ``[M images, N categories]`` (torch tensors, numpy arrays or
nested lists); targets are {0, 1} (anything > 0 counts as positive).

* AP of one category is scikit-learn's ``average_precision_score`` (the step-wise area under the
  precision-recall curve, no interpolation). A category with no positive image has no AP: ``nan``
  in :func:`average_precision_per_class`, ``None`` in :func:`evaluate_scores`; mAP is the mean over
  the categories that have one (0..100).
* F1 at top-k follows the multi-label literature's evaluation code (ML-GCN's / TaI-DPT's
  ``AveragePrecisionMeter.evaluation``): each image predicts its k highest-scoring categories
  (ties broken by the lower category index). Per category c: Ng = positives, Np = predictions,
  Nc = correct predictions.

  - OP = sum Nc / sum Np, OR = sum Nc / sum Ng, OF1 = 2 OP OR / (OP + OR).
  - CP = mean over ALL categories of Nc / Np, where a category never predicted counts as precision 0
    (ML-GCN's ``Np[Np == 0] = 1``), so missing a category is penalised.
  - CR = mean over the categories WITH at least one positive of Nc / Ng. ML-GCN would divide 0 by 0
    here (nan: its datasets never lack a positive); we leave such categories out, as mAP does.
  - CF1 = 2 CP CR / (CP + CR). Any F1 whose precision and recall are both 0 is 0.
  - Unlike ML-GCN, a top-k prediction is not additionally required to have a score >= 0 (their
    scores are logits; ours are cosine similarities, for which 0 is no decision boundary). Pass
    ``min_score`` to restore that rule.
  All F1-family values are percentages (0..100); OR/CR are nan when no image has any positive.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score

F1_KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def _as_matrices(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s = _to_numpy(scores).astype(np.float64)
    t = _to_numpy(targets)
    if s.ndim != 2 or t.shape != s.shape:
        raise ValueError(
            f"scores and targets must be matrices of the same shape [images, categories]; "
            f"got {tuple(s.shape)} and {tuple(t.shape)}."
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain nan or infinite values.")
    return s, (t > 0).astype(np.int64)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def average_precision_per_class(scores, targets) -> np.ndarray:
    """AP of every category (0..1, sklearn's definition); nan where a category has no positive."""
    s, t = _as_matrices(scores, targets)
    out = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        if t[:, c].any():
            out[c] = average_precision_score(t[:, c], s[:, c])
    return out


def mean_average_precision(scores, targets) -> float:
    """Mean AP over the categories that have a positive, in percent (nan when none has one)."""
    ap = average_precision_per_class(scores, targets)
    if np.all(np.isnan(ap)):
        return float("nan")
    return float(np.nanmean(ap) * 100.0)


def top_k_mask(scores, k: int, min_score: float | None = None) -> np.ndarray:
    """Boolean [M, N]: True on each row's k highest scores (lower index wins a tie)."""
    s = _to_numpy(scores).astype(np.float64)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    k = min(k, s.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    mask = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    if min_score is not None:
        mask &= s >= min_score
    return mask


def _f1(p: float, r: float) -> float:
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def f1_at_k(scores, targets, k: int = 3, min_score: float | None = None) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 (percent) of top-k predictions; conventions in the module docstring."""
    s, t = _as_matrices(scores, targets)
    pred = top_k_mask(s, k, min_score)
    n_pos = t.sum(axis=0).astype(np.float64)           # Ng
    n_pred = pred.sum(axis=0).astype(np.float64)       # Np
    n_correct = (pred & (t > 0)).sum(axis=0).astype(np.float64)  # Nc

    op = n_correct.sum() / n_pred.sum() if n_pred.sum() > 0 else 0.0
    orr = n_correct.sum() / n_pos.sum() if n_pos.sum() > 0 else float("nan")
    cp = float(np.mean(n_correct / np.maximum(n_pred, 1.0))) if s.shape[1] else float("nan")
    has_pos = n_pos > 0
    cr = float(np.mean(n_correct[has_pos] / n_pos[has_pos])) if has_pos.any() else float("nan")
    out = {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": float(op), "OR": float(orr), "OF1": _f1(op, orr)}
    return {key: (v * 100.0 if not np.isnan(v) else v) for key, v in out.items()}


def evaluate_scores(scores, targets, categories: list[str], k: int = 3,
                    min_score: float | None = None) -> dict:
    """mAP, the F1-at-k keys and ``per_category_ap`` ({name: AP in percent, or None without positives})."""
    s, t = _as_matrices(scores, targets)
    if len(categories) != s.shape[1]:
        raise ValueError(f"{len(categories)} category names for {s.shape[1]} score columns.")
    ap = average_precision_per_class(s, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result: dict = {"mAP": mean_average_precision(s, t)}
    result.update(f1_at_k(s, t, k=k, min_score=min_score))
    result["k"] = k
    result["per_category_ap"] = {
        name: (None if np.isnan(v) else float(v * 100.0)) for name, v in zip(categories, ap)
    }
    result["num_images"] = int(s.shape[0])
    result["num_scored_categories"] = int(np.sum(~np.isnan(ap)))
    return result
