"""Confidences a person can read: raw fused scores (cosines, often negative, on a scale that
differs per category) -> a 0-1 probability per category, and a per-category threshold.

A probability needs labelled images: nothing image-free tells how often a cosine of 0.21 means
"the category is in the photo". So calibration is fitted where labelled images exist - an
evaluation on a labelled set (METHOD.md section 6) - and kept with that evaluation:

* Platt scaling per category: p_c(s) = sigmoid(a_c * s + b_c), fitted by Newton's method on the
  labelled images' scores, with Platt's smoothed targets ((n+ + 1) / (n+ + 2) for positives,
  1 / (n- + 2) for negatives) so a category seen a few times does not get a step function.
* Few labelled images per category: each category's (a_c, b_c) is pulled towards one fit pooled
  over every category (a Gaussian prior, ``CalibrationSettings.prior_strength``); a category
  with no positive (or no negative) image gets the pooled fit alone.
* The threshold of a category is the score at which its probability reaches
  ``CalibrationSettings.decision_probability`` (0.5: "more likely than not"). Where the scores do
  not rise with presence at all (not even pooled), the probability is the category's base rate
  whatever the score, and the threshold is out of reach (or always met).

Before any calibration, :func:`within_image_scale` maps one image's scores onto 0-1 by their
rank within that image (1 = its best category); this is NOT a probability and the studio says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

NEVER = 1e9  # the threshold of a category whose score carries no information (finite: JSON)


@dataclass
class CalibrationSettings:
    """``prior_strength``: weight of the pooled fit in each category's fit (in images);
    ``decision_probability``: the probability a label's threshold stands for; ``iterations`` of
    Newton's method."""

    prior_strength: float = 2.0
    decision_probability: float = 0.5
    iterations: int = 50


@dataclass
class Calibration:
    """Per-category Platt parameters and thresholds, and where they were fitted."""

    categories: list[str]
    slope: dict[str, float]
    intercept: dict[str, float]
    thresholds: dict[str, float]
    source: str = ""
    images: int = 0
    positives: dict[str, int] = field(default_factory=dict)

    def probabilities(self, scores) -> np.ndarray:
        """[B, N] (or [N]) raw scores in ``categories`` order -> probabilities in 0-1."""
        s = np.asarray(scores, dtype=np.float64)
        a = np.array([self.slope[c] for c in self.categories])
        b = np.array([self.intercept[c] for c in self.categories])
        return _sigmoid(a * s + b)

    def probability(self, category: str, score: float) -> float:
        return float(_sigmoid(self.slope[category] * float(score) + self.intercept[category]))

    def to_dict(self) -> dict:
        return {"categories": list(self.categories), "slope": dict(self.slope),
                "intercept": dict(self.intercept), "thresholds": dict(self.thresholds),
                "source": self.source, "images": int(self.images), "positives": dict(self.positives)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Calibration":
        return cls(list(d["categories"]), {k: float(v) for k, v in d["slope"].items()},
                   {k: float(v) for k, v in d["intercept"].items()},
                   {k: float(v) for k, v in d["thresholds"].items()}, str(d.get("source", "")),
                   int(d.get("images", 0)), {k: int(v) for k, v in (d.get("positives") or {}).items()})


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _platt_targets(y: np.ndarray) -> np.ndarray:
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    return np.where(y > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def _fit_logistic(s: np.ndarray, t: np.ndarray, prior: tuple[float, float] | None, strength: float,
                  iterations: int) -> tuple[float, float]:
    """(a, b) minimising cross-entropy of sigmoid(a s + b) against soft targets ``t``, plus
    ``strength/2 * |(a, b) - prior|^2`` when a prior is given. Newton steps with a small ridge."""
    a, b = prior if prior is not None else (1.0, 0.0)
    x = np.stack([s, np.ones_like(s)], axis=1)
    w0 = np.array(prior if prior is not None else (0.0, 0.0))
    lam = strength if prior is not None else 1e-6
    w = np.array([a, b], dtype=np.float64)
    for _ in range(iterations):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - t) + lam * (w - w0)
        hess = (x * (p * (1 - p))[:, None]).T @ x + lam * np.eye(2) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return float(w[0]), float(w[1])


def fit_calibration(scores, targets, categories: Sequence[str], source: str = "",
                    settings: CalibrationSettings | None = None) -> Calibration:
    """Fit per-category Platt scaling on labelled images' raw scores ``[M, N]`` and multi-hot
    ``targets [M, N]`` (see the module doc). Raises ValueError on mismatched shapes or when the
    set has no positive label at all (nothing to calibrate on)."""
    st = settings or CalibrationSettings()
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    cats = [str(c) for c in categories]
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(cats):
        raise ValueError(f"Scores {s.shape} and targets {y.shape} must both be [images, {len(cats)}].")
    if s.shape[0] == 0 or y.sum() == 0 or y.sum() == y.size:
        raise ValueError("Calibration needs labelled images with both present and absent categories.")
    # fitted on standardised scores (the prior's strength then means the same for any scale)
    mean, std = float(s.mean()), float(s.std()) or 1.0
    z = (s - mean) / std
    fittable = (y.sum(0) > 0) & (y.sum(0) < len(y))  # categories seen both present and absent
    cols = fittable if fittable.any() else np.ones(len(cats), bool)
    pooled = _fit_logistic(z[:, cols].reshape(-1), _platt_targets(y[:, cols].reshape(-1)), None, 0.0,
                           st.iterations)
    slope, intercept, thresholds, positives = {}, {}, {}, {}
    logit = math.log(st.decision_probability / (1.0 - st.decision_probability))
    for n, c in enumerate(cats):
        col, yc = z[:, n], y[:, n]
        positives[c] = int(yc.sum())
        if fittable[n]:
            a, b = _fit_logistic(col, _platt_targets(yc), pooled, st.prior_strength, st.iterations)
        else:
            a, b = pooled
        if a <= 1e-6:  # scores that do not rise with presence: fall back to the pooled fit
            a, b = pooled
        if a <= 1e-6:  # not even pooled: the score says nothing, the chance is the base rate
            rate = (y[:, n].sum() + 1.0) / (len(y) + 2.0)
            slope[c], intercept[c] = 0.0, math.log(rate / (1.0 - rate))
            thresholds[c] = NEVER if rate < st.decision_probability else -NEVER
            continue
        slope[c], intercept[c] = a / std, b - a * mean / std
        thresholds[c] = (logit - intercept[c]) / slope[c]
    return Calibration(cats, slope, intercept, thresholds, source, int(s.shape[0]), positives)


def within_image_scale(scores: Mapping[str, float]) -> dict[str, float]:
    """One image's scores -> 0-1 by position between its lowest (0) and highest (1) score. A
    ranking aid for an uncalibrated classifier, not a probability."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {c: (1.0 if span <= 0 else (float(v) - lo) / span) for c, v in scores.items()}


def label_chips(scores: Mapping[str, float], k: int, calibration: Calibration | None = None
                ) -> list[tuple[str, float, bool]]:
    """One image's top-``k`` labels as ``(category, confidence 0-1, over its threshold)``, best
    first. With a calibration the confidence is the calibrated probability and the flag compares
    the score with the category's threshold; without one the confidence is
    :func:`within_image_scale` and no label is flagged (there is no threshold to compare with)."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:max(0, int(k))]
    if calibration is None:
        scale = within_image_scale(scores)
        return [(c, scale[c], False) for c, _ in ranked]
    out = []
    for c, s in ranked:
        if c in calibration.slope:
            out.append((c, calibration.probability(c, s), s >= calibration.thresholds[c]))
        else:
            out.append((c, within_image_scale(scores)[c], False))
    return out
