"""The training objectives and the feature noise (METHOD.md sections 4 and 7, paper eq. 7, 10, 12-14).

* :func:`ranking_loss` - sum over positive i, negative j of max(0, m - s_i + s_j), mean over the
  batch (the authors' and TaI-DPT's ``ranking_loss``: sum over pairs, mean over sentences).
* :func:`order_loss_pairs` - the authors' order loss (``utils/trainers_baseline.py``): the class-pair
  similarities of the upper triangle of E E^T (no diagonal), times ``scale`` (100), ONE softmax over
  all N(N-1)/2 pairs, and KL(hand || learned) with sum reduction, the hand-crafted distribution
  fixed.
* :func:`order_loss_rows` - this project's first reading of paper eq. 13: a row softmax of
  E E^T / T (diagonal kept), KL per row, mean over rows. With unit rows and T = 1 the logits span
  at most [-1, 1], so the loss is about 1e-3 of the pairs form: kept as the alternative setting.
* :func:`add_noise` - Gaussian noise of std ``std`` per component on L2-normalised features;
  ``renormalize`` puts the result back on the unit sphere (the authors do not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over the batch of sum_{i pos, j neg} max(0, margin - s_i + s_j); scores/targets [B, N].

    Exact, in O(B N) memory and O(B N log N) time instead of the [B, N, N] pair tensor (2 GB at
    batch 512 and 1,000 categories): a positive i pays for the negatives above s_i - margin, which
    is ``count * (margin - s_i) + sum of those s_j``, read off each row's sorted negatives and
    their suffix sums.
    """
    positive = targets > 0
    negatives = torch.where(positive, torch.full_like(scores, float("-inf")), scores)
    ordered, _ = negatives.sort(dim=1)  # ascending; the positives' -inf first
    finite = torch.where(torch.isinf(ordered), torch.zeros_like(ordered), ordered)
    suffix = torch.cat([finite.flip(1).cumsum(1).flip(1), finite.new_zeros(finite.shape[0], 1)], 1)
    cut = torch.searchsorted(ordered.detach().contiguous(), (scores - margin).detach().contiguous(),
                             right=True)  # first negative strictly above s_i - margin
    count = (scores.shape[1] - cut).to(scores.dtype)
    per_positive = count * (margin - scores) + suffix.gather(1, cut)
    return torch.where(positive, per_positive, torch.zeros_like(per_positive)).sum(1).mean()


def pair_log_distribution(emb: torch.Tensor, scale: float) -> torch.Tensor:
    """log softmax over the upper-triangle pairs (i < j, row-major order) of ``scale * emb emb^T``."""
    n = emb.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1, device=emb.device)
    return F.log_softmax(scale * (emb @ emb.T)[rows, cols], dim=0)


def order_loss_pairs(emb: torch.Tensor, hand: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """KL(p_hand || p_learned) summed over class pairs; ``emb`` and ``hand`` normalised [N, d], N >= 2.

    p = softmax over the pairs i < j of ``scale * cos(E_i, E_j)``; ``hand`` is treated as fixed.
    Zero for a single category (no pair).
    """
    if emb.shape[0] < 2:
        return emb.sum() * 0.0
    log_p = pair_log_distribution(emb, scale)
    log_q = pair_log_distribution(hand.detach(), scale)
    return F.kl_div(log_p, log_q, reduction="sum", log_target=True)


def order_loss_rows(emb: torch.Tensor, reference_sim: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax_rows(D^H / T) || softmax_rows(E E^T / T)), mean over rows; ``emb`` normalised [N, d]."""
    log_p = F.log_softmax(emb @ emb.T / temperature, dim=-1)
    target = F.softmax(reference_sim / temperature, dim=-1)
    return F.kl_div(log_p, target, reduction="batchmean")


def add_noise(x: torch.Tensor, std: float, gen: torch.Generator, renormalize: bool = False) -> torch.Tensor:
    """``x`` + N(0, std^2) per component (drawn on the CPU from ``gen``), optionally re-normalised."""
    if std > 0:
        x = x + (torch.randn(x.shape, generator=gen) * std).to(x.device)
    return F.normalize(x, dim=-1) if renormalize else x
