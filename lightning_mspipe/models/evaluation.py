"""Streaming link-prediction metrics: AP and AUROC (all and new-node events) and one-vs-many MRR."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.metrics import LinkMRR, reciprocal_rank_sum

__all__ = ["LinkEvaluation", "use_data_mrr"]


class LinkEvaluation(nn.Module):
    """Accumulates one evaluation phase's scores and computes its metrics.

    AP and AUROC score each positive against its first negative (column 0, fixed and seeded);
    the ``_inductive`` variants do the same over events that touch a node unseen in training;
    MRR ranks each positive among all its ``Q`` negatives (only when ``Q > 1``).

    With several ranks (each scoring its slice of every batch) :meth:`compute` equals the metric
    of one process over all events: AP and AUROC gather every rank's scores (torchmetrics' ``cat``
    states), MRR sums reciprocal ranks and counts, and whether inductive or ranked metrics exist
    is agreed across ranks first (every rank then runs the same collectives).

    Args:
        prefix: Metric name prefix, for example ``"val"`` or ``"test"``.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.ap, self.auroc = BinaryAveragePrecision(), BinaryAUROC()
        self.ap_inductive, self.auroc_inductive = BinaryAveragePrecision(), BinaryAUROC()
        self.mrr = LinkMRR()
        self._inductive_seen = False
        self._ranked = False

    def use_mrr(self, rank_sum: Callable[[Tensor, Tensor], Tensor] | None) -> None:
        """Rank with ``rank_sum`` (a data set's own evaluator, see :class:`~lightning_mspipe.metrics.LinkMRR`),
        or with the default rule when ``None``."""
        self.mrr.rank_sum = reciprocal_rank_sum if rank_sum is None else rank_sum

    def update(self, pos: Tensor, neg: Tensor, new_node: Tensor | None, neg_mask: Tensor | None = None) -> None:
        """Add one batch; negatives outside ``neg_mask`` (padding) score ``-inf`` and never count.

        Shapes:
            - pos: ``[B]`` logits; neg: ``[B, Q]`` logits; new_node: ``[B]`` bool or ``None``;
              neg_mask: ``[B, Q]`` bool or ``None`` (all real)
        """
        pos, neg = pos.float(), neg.float()
        if neg_mask is not None:
            neg = neg.masked_fill(~neg_mask.to(neg.device), float("-inf"))
        scores = torch.cat([pos, neg[:, 0]])
        labels = torch.cat([torch.ones_like(pos, dtype=torch.long), torch.zeros_like(pos, dtype=torch.long)])
        self.ap.update(scores, labels)
        self.auroc.update(scores, labels)
        if new_node is not None:
            pick = torch.cat([new_node, new_node])
            if bool(pick.any()):  # one sync per evaluation batch, not on the training path
                self._inductive_seen = True
                self.ap_inductive.update(scores[pick], labels[pick])
                self.auroc_inductive.update(scores[pick], labels[pick])
        if neg.shape[1] > 1:
            self._ranked = True
            self.mrr.update(pos, neg)

    def compute(self) -> dict[str, Tensor]:
        """Metrics named ``{prefix}/ap``, ``{prefix}/auroc``, ``{prefix}/ap_inductive``, ... ``{prefix}/mrr``."""
        self._agree_across_ranks()
        out = {"ap": self.ap.compute(), "auroc": self.auroc.compute()}
        if self._inductive_seen:
            out["ap_inductive"] = self.ap_inductive.compute()
            out["auroc_inductive"] = self.auroc_inductive.compute()
        if self._ranked:
            out["mrr"] = self.mrr.compute()
        return {f"{self.prefix}/{name}": value for name, value in out.items()}

    def _agree_across_ranks(self) -> None:
        """Make the inductive and ranked flags true on every rank if one rank saw such events (one all-reduce)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        flags = torch.tensor([self._inductive_seen, self._ranked], dtype=torch.int32, device=self.mrr.count.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self._inductive_seen, self._ranked = bool(flags[0]), bool(flags[1])

    def reset(self) -> None:
        for metric in (self.ap, self.auroc, self.ap_inductive, self.auroc_inductive, self.mrr):
            metric.reset()
        self._inductive_seen = self._ranked = False


def use_data_mrr(datamodule: object, *evaluations: LinkEvaluation) -> None:
    """Rank MRR as the data defines it: TGB's evaluator for a TGB set (``TemporalDataModule.mrr_function``),
    the default rule otherwise (also for a data module that is not a :class:`TemporalDataModule`)."""
    rank_sum = datamodule.mrr_function if isinstance(datamodule, TemporalDataModule) else None
    for evaluation in evaluations:
        evaluation.use_mrr(rank_sum)
