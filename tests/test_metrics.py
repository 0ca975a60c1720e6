"""engine.metrics against scikit-learn and hand-worked F1-at-3 cases."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from engine.metrics import (
    average_precision_per_class,
    evaluate_scores,
    f1_at_k,
    mean_average_precision,
    top_k_mask,
)


def test_ap_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(5):
        m, n = 60 + trial * 7, 9
        scores = rng.normal(size=(m, n))
        targets = (rng.random((m, n)) < 0.3).astype(int)
        targets[:, 4] = 0  # a category with no positive
        ap = average_precision_per_class(scores, targets)
        for c in range(n):
            if c == 4:
                assert math.isnan(ap[c])
            else:
                assert ap[c] == pytest.approx(average_precision_score(targets[:, c], scores[:, c]), abs=1e-12)
        expected = np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in range(n) if c != 4])
        assert mean_average_precision(scores, targets) == pytest.approx(expected * 100, abs=1e-9)
        # torch inputs give the same numbers
        assert mean_average_precision(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(
            expected * 100, abs=1e-4)


def test_map_of_perfect_and_reversed_ranking():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    assert mean_average_precision(targets * 2.0, targets) == pytest.approx(100.0)
    # every positive ranked last: AP of a column with 2 positives among 4 = (1/3 + 2/4) / 2
    ap = average_precision_per_class(-targets * 1.0 + np.arange(4)[:, None] * 1e-3, targets)
    assert ap[0] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_f1_at_3_hand_worked_with_unpositive_categories():
    # 5 categories, k = 3. Categories 3 and 4 have no positive but are predicted once each.
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.0],
                       [0.1, 0.9, 0.2, 0.8, 0.7]])
    targets = np.array([[1, 0, 1, 0, 0],
                        [0, 1, 0, 0, 0]])
    # Nc = [1,1,1,0,0], Np = [1,2,1,1,1], Ng = [1,1,1,0,0]
    r = f1_at_k(scores, targets, k=3)
    assert r["OP"] == pytest.approx(50.0)          # 3 / 6
    assert r["OR"] == pytest.approx(100.0)         # 3 / 3
    assert r["OF1"] == pytest.approx(200 / 3)      # 2 * .5 * 1 / 1.5
    assert r["CP"] == pytest.approx(50.0)          # (1 + .5 + 1 + 0 + 0) / 5
    assert r["CR"] == pytest.approx(100.0)         # over the 3 categories with positives
    assert r["CF1"] == pytest.approx(200 / 3)


def test_f1_at_3_hand_worked_with_a_never_predicted_category():
    scores = np.array([[0.9, 0.1, 0.8, 0.7, 0.0],
                       [0.2, 0.1, 0.9, 0.8, 0.7]])
    targets = np.array([[1, 1, 0, 0, 0],
                        [0, 0, 1, 0, 0]])
    # preds: image 0 -> {0, 2, 3}, image 1 -> {2, 3, 4}
    # Nc = [1,0,1,0,0], Np = [1,0,2,2,1], Ng = [1,1,1,0,0]
    r = f1_at_k(scores, targets, k=3)
    assert r["OP"] == pytest.approx(100 * 2 / 6)
    assert r["OR"] == pytest.approx(100 * 2 / 3)
    assert r["OF1"] == pytest.approx(100 * 4 / 9)
    assert r["CP"] == pytest.approx(30.0)   # (1 + 0 + .5 + 0 + 0) / 5: never predicted counts 0
    assert r["CR"] == pytest.approx(200 / 3)  # (1 + 0 + 1) / 3
    assert r["CF1"] == pytest.approx(100 * 2 * 0.3 * (2 / 3) / (0.3 + 2 / 3))


def test_top_k_ties_and_min_score():
    s = np.array([[0.5, 0.5, 0.5, 0.5]])
    assert top_k_mask(s, 2).tolist() == [[True, True, False, False]]
    s = np.array([[0.3, -0.2, 0.1]])
    assert top_k_mask(s, 3, min_score=0.0).tolist() == [[True, False, True]]
    assert top_k_mask(s, 10).sum() == 3  # k larger than N: every category


def test_no_positive_anywhere_and_bad_input():
    scores = np.random.default_rng(1).random((4, 3))
    targets = np.zeros((4, 3))
    assert math.isnan(mean_average_precision(scores, targets))
    r = f1_at_k(scores, targets, k=3)
    assert r["OP"] == 0.0 and r["CP"] == 0.0
    assert math.isnan(r["OR"]) and math.isnan(r["CR"])
    with pytest.raises(ValueError, match="same shape"):
        f1_at_k(scores, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="nan"):
        mean_average_precision(np.full((2, 2), np.nan), np.eye(2))


def test_evaluate_scores_report():
    scores = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.7, 0.6, 0.2]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    r = evaluate_scores(scores, targets, ["cat", "dog", "fish"], k=1)
    assert r["mAP"] == pytest.approx(100.0)
    assert r["per_category_ap"] == {"cat": pytest.approx(100.0), "dog": pytest.approx(100.0), "fish": None}
    assert r["OP"] == pytest.approx(100.0) and r["OR"] == pytest.approx(75.0)
    assert r["num_scored_categories"] == 2
    with pytest.raises(ValueError, match="category names"):
        evaluate_scores(scores, targets, ["cat"])
