"""The sort-based ranking loss equals the pairwise definition, in value and gradient."""
import pytest
import torch
import torch.nn.functional as F

from engine.losses import ranking_loss


def pairwise_ranking_loss(scores, targets, margin):
    diff = margin - scores[:, :, None] + scores[:, None, :]
    pairs = targets[:, :, None] * (1.0 - targets[:, None, :])
    return (F.relu(diff) * pairs).sum(dim=(1, 2)).mean()


@pytest.mark.parametrize("n, density, margin", [(3, 0.5, 1.0), (17, 0.2, 1.0), (80, 0.05, 0.3),
                                                 (200, 0.5, 2.0)])
def test_sorted_form_equals_pairwise_form(n, density, margin):
    gen = torch.Generator().manual_seed(n)
    scores = (torch.randn(12, n, generator=gen) * 2).requires_grad_()
    targets = (torch.rand(12, n, generator=gen) < density).float()
    targets[0] = 0.0  # a row without positives
    targets[1] = 1.0  # a row without negatives
    fast = ranking_loss(scores, targets, margin)
    (g_fast,) = torch.autograd.grad(fast, scores)
    ref_scores = scores.detach().clone().requires_grad_()
    ref = pairwise_ranking_loss(ref_scores, targets, margin)
    (g_ref,) = torch.autograd.grad(ref, ref_scores)
    assert float(fast) == pytest.approx(float(ref), rel=1e-5, abs=1e-5)
    assert torch.allclose(g_fast, g_ref, atol=1e-5)


def test_ties_and_the_margin_edge():
    # s_neg exactly at s_pos - margin contributes 0 either way; equal scores pay the full margin
    s = torch.tensor([[1.0, 0.0, 1.0, 0.5]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # pos 0 (1.0): negs 0.0 -> 0, 1.0 -> 1 ; pos 3 (0.5): negs 0.0 -> .5, 1.0 -> 1.5
    assert float(ranking_loss(s, y, 1.0)) == pytest.approx(3.0)
    ranking_loss(s, y, 1.0).backward()
    # d/ds: pos 0 is in 1 active pair (-1), pos 3 in 2 (-2); neg 1 in 1 (+1), neg 2 in 2 (+2)
    assert s.grad.tolist() == [[-1.0, 1.0, 2.0, -2.0]]
