"""engine.calibration: Platt scaling per category recovers known probabilities, falls back to the
pooled fit where a category cannot be fitted, thresholds sit at probability 0.5, and the
within-image scale is a 0-1 ranking."""
import numpy as np
import pytest

from engine.calibration import (Calibration, CalibrationSettings, fit_calibration, label_chips,
                                within_image_scale)

CATS = ["cat", "dog", "sofa"]


def synthetic(m=4000, seed=0, params=((40.0, -8.0), (25.0, -2.0), (60.0, -15.0))):
    """Scores like cosines (0..0.4); presence drawn from a known logistic of the score."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.0, 0.4, size=(m, len(params)))
    y = np.zeros_like(s)
    for n, (a, b) in enumerate(params):
        y[:, n] = rng.random(m) < 1 / (1 + np.exp(-(a * s[:, n] + b)))
    return s, y, params


def test_recovers_the_true_probabilities():
    s, y, params = synthetic()
    cal = fit_calibration(s, y, CATS, source="synthetic")
    grid = np.linspace(0, 0.4, 9)
    for n, c in enumerate(CATS):
        a, b = params[n]
        truth = 1 / (1 + np.exp(-(a * grid + b)))
        got = np.array([cal.probability(c, g) for g in grid])
        assert np.abs(got - truth).max() < 0.08, (c, got, truth)
        # the threshold is where the probability reaches one half
        assert cal.probability(c, cal.thresholds[c]) == pytest.approx(0.5, abs=1e-6)
        assert cal.thresholds[c] == pytest.approx(-b / a, abs=0.03)
    assert cal.images == len(s) and cal.positives["cat"] == int(y[:, 0].sum())


def test_probabilities_are_calibrated_on_held_out_images():
    s, y, params = synthetic(seed=1)
    cal = fit_calibration(s[:2000], y[:2000], CATS)
    p = cal.probabilities(s[2000:])
    assert p.shape == (2000, 3) and (p >= 0).all() and (p <= 1).all()
    a, b = np.array(params).T
    truth = (1 / (1 + np.exp(-(a * s[2000:] + b)))).reshape(-1)
    observed = y[2000:].reshape(-1)
    bins = np.digitize(p.reshape(-1), np.linspace(0, 1, 6)[1:-1])
    for k in range(5):
        sel = bins == k
        assert sel.sum() > 100
        # mean confidence in a bin = the true presence rate there (sampling noise aside)
        assert abs(p.reshape(-1)[sel].mean() - truth[sel].mean()) < 0.03
        assert abs(p.reshape(-1)[sel].mean() - observed[sel].mean()) < 0.08


def test_category_without_positives_gets_the_pooled_fit_and_few_images_are_shrunk():
    s, y, _ = synthetic(m=600)
    y[:, 2] = 0  # "sofa" never present
    cal = fit_calibration(s, y, CATS)
    assert np.isfinite(cal.thresholds["sofa"]) and cal.slope["sofa"] > 0
    assert cal.positives["sofa"] == 0
    # "sofa" has no data of its own: it gets the one fit pooled over the fittable categories
    pooled = fit_calibration(s[:, :2].reshape(-1, 1), y[:, :2].reshape(-1, 1), ["any"])
    assert cal.slope["sofa"] == pytest.approx(pooled.slope["any"], rel=1e-4)
    assert cal.intercept["sofa"] == pytest.approx(pooled.intercept["any"], rel=1e-4)
    # a tiny, separable set: the fit stays finite and increasing instead of a step function
    s6 = np.array([[0.30, 0.10, 0.2], [0.28, 0.12, 0.1], [0.05, 0.31, 0.2],
                   [0.08, 0.29, 0.1], [0.12, 0.07, 0.2], [0.31, 0.30, 0.1]])
    y6 = (s6 > 0.2).astype(float)
    few = fit_calibration(s6, y6, CATS)
    for c in CATS:
        assert 0 < few.slope[c] < 500 and np.isfinite(few.intercept[c])
    assert 0.1 < few.thresholds["cat"] < 0.3


def test_round_trip_and_bad_input():
    s, y, _ = synthetic(m=300)
    cal = fit_calibration(s, y, CATS, source="set.csv",
                          settings=CalibrationSettings(decision_probability=0.7))
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal
    assert cal.probability("dog", cal.thresholds["dog"]) == pytest.approx(0.7, abs=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        fit_calibration(s, y[:, :2], CATS)
    with pytest.raises(ValueError, match="present and absent"):
        fit_calibration(s, np.zeros_like(y), CATS)


def test_within_image_scale_is_a_ranking_on_0_1():
    out = within_image_scale({"cat": -0.05, "dog": 0.15, "sofa": 0.05})
    assert out == {"cat": 0.0, "dog": 1.0, "sofa": pytest.approx(0.5)}
    assert within_image_scale({"cat": 0.2}) == {"cat": 1.0}
    assert within_image_scale({}) == {}


def test_label_chips_with_and_without_calibration():
    scores = {"cat": 0.31, "dog": 0.12, "sofa": 0.22}
    plain = label_chips(scores, 2)
    assert plain == [("cat", 1.0, False), ("sofa", pytest.approx(10 / 19), False)]
    cal = Calibration(CATS, {c: 40.0 for c in CATS}, {c: -8.0 for c in CATS},
                      {c: 0.2 for c in CATS}, "set.csv", 10)
    chips = label_chips(scores, 3, cal)
    assert [c for c, _, _ in chips] == ["cat", "sofa", "dog"]
    assert [on for _, _, on in chips] == [True, True, False]
    assert chips[0][1] == pytest.approx(1 / (1 + np.exp(-(40 * 0.31 - 8))))


def test_scores_that_carry_no_information_give_the_base_rate():
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 0.4, size=(200, 3))
    y = (s < 0.1).astype(float)  # present when the score is LOW: no increasing fit exists
    cal = fit_calibration(s, y, CATS)
    for n, c in enumerate(CATS):
        assert cal.slope[c] == 0.0
        assert cal.probability(c, 0.0) == pytest.approx(cal.probability(c, 0.4))
        assert cal.probability(c, 0.3) == pytest.approx((y[:, n].sum() + 1) / 202)
        chips = label_chips({"cat": 0.3, "dog": 0.2, "sofa": 0.1}, 3, cal)
        assert not any(on for _, _, on in chips)  # a base rate under 0.5 never passes
