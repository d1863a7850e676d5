"""Ranking metrics for link prediction: one-vs-many MRR ranked the way TGB ranks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["LinkMRR", "link_ranks", "link_mrr", "reciprocal_rank_sum"]


def link_ranks(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    """Rank of each positive among its negatives, with TGB's tie rule.

    ``rank = 1 + #(negatives scoring strictly higher) + ½ · #(negatives scoring equal)``, the
    mean of the optimistic and pessimistic ranks, exactly as TGB's evaluator computes it.
    (``torchmetrics.RetrievalMRR`` breaks ties by sort order instead, which rewards constant
    scores; do not use it for this.)

    Shapes:
        - pos_score: ``[B]``; neg_score: ``[B, Q]``; output: ``[B]`` float
    """
    if neg_score.dim() != 2 or neg_score.shape[0] != pos_score.shape[0]:
        raise ValueError(
            f"link_ranks: neg_score must be [B, Q] with B = {pos_score.shape[0]}, got {tuple(neg_score.shape)}."
        )
    pos = pos_score.unsqueeze(1)
    higher = (neg_score > pos).sum(dim=1)
    ties = (neg_score == pos).sum(dim=1)
    return 1.0 + higher.to(torch.float64) + 0.5 * ties.to(torch.float64)


def link_mrr(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    """Mean reciprocal rank of the positives (see :func:`link_ranks` for the tie rule). Scalar."""
    return (1.0 / link_ranks(pos_score, neg_score)).mean()


def reciprocal_rank_sum(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    """Sum of the reciprocal ranks of the positives (see :func:`link_ranks`). Scalar float64."""
    return (1.0 / link_ranks(pos_score, neg_score)).sum()


class LinkMRR(Metric):
    """Streaming one-vs-many MRR over batches of ``[B]`` positive and ``[B, Q]`` negative scores.

    Keeps only a sum and a count (O(1) state); all positives of a batch are ranked at once. A
    negative scored ``-inf`` (a padded slot) never ranks above or ties a positive.

    Args:
        rank_sum: ``(pos [B], neg [B, Q]) → sum of reciprocal ranks``; default
            :func:`reciprocal_rank_sum` (TGB's rule). A TGB data set brings TGB's own evaluator
            (:func:`~lightning_mspipe.data.tgb.tgb_reciprocal_rank_sum`).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, rank_sum: Callable[[Tensor, Tensor], Tensor] = reciprocal_rank_sum, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.rank_sum = rank_sum
        self.add_state("reciprocal_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pos_score: Tensor, neg_score: Tensor) -> None:
        self.reciprocal_sum += self.rank_sum(pos_score.detach(), neg_score.detach()).to(self.reciprocal_sum)
        self.count += pos_score.numel()

    def compute(self) -> Tensor:
        return (self.reciprocal_sum / self.count.clamp(min=1)).to(torch.float32)
