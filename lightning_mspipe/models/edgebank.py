"""EdgeBank: the non-parametric link-prediction baseline (Poursafaei et al., NeurIPS 2022).

EdgeBank predicts that an edge exists when it has been seen before: its score is 1 for a pair
``(src, dst)`` in its bank and 0 otherwise. ``unlimited`` keeps every edge it has seen;
``time_window`` keeps edges seen within the last ``time_window`` time units before the query
(the paper's EdgeBank_tw uses the span of the evaluation split). It runs through the same
:class:`~lightning_mspipe.data.datamodule.TemporalDataModule` and metrics as the learned models:
training inserts the training events, validation and test score each batch before inserting it,
as the memory-based models do, so it is the floor every learned model must clear.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.models.evaluation import LinkEvaluation, use_data_mrr

__all__ = ["EDGEBANK_MODES", "EdgeBank", "EdgeMemory"]

#: Modes accepted by :class:`EdgeBank`.
EDGEBANK_MODES: tuple[str, ...] = ("unlimited", "time_window")


class EdgeMemory:
    """A set of directed pairs with the last time each was seen, as sorted int64 keys.

    A pair ``(u, v)`` has key ``u · N + v``; lookups are one ``searchsorted``. Inserts are
    buffered and merged on the next read, so a training epoch (inserts only) sorts the bank once,
    not once per batch.

    Args:
        num_nodes: ``N``.

    Shapes:
        - keys: ``[P]`` int64, sorted and unique; last_seen: ``[P]`` float64
    """

    def __init__(self, num_nodes: int) -> None:
        if num_nodes * num_nodes >= 2**63:
            raise ValueError(f"EdgeMemory: num_nodes={num_nodes} overflows the int64 pair key.")
        self.num_nodes = num_nodes
        self._keys = torch.empty(0, dtype=torch.int64)
        self._last_seen = torch.empty(0, dtype=torch.float64)
        self._pending: list[tuple[Tensor, Tensor]] = []

    @property
    def keys(self) -> Tensor:
        """``[P]`` int64: the sorted, unique pair keys."""
        self._merge()
        return self._keys

    @property
    def last_seen(self) -> Tensor:
        """``[P]`` float64: the latest time each pair of :attr:`keys` was seen."""
        self._merge()
        return self._last_seen

    def clear(self) -> None:
        """Forget every pair."""
        self._keys, self._last_seen, self._pending = self._keys[:0], self._last_seen[:0], []

    def insert(self, src: Tensor, dst: Tensor, t: Tensor) -> None:
        """Add pairs seen at times ``t``; a pair seen again keeps its latest time.

        Shapes:
            - src, dst, t: ``[B]``

        O(B) now; the merge (one sort of the bank and all pending pairs) happens on the next read.
        """
        self._pending.append((src.cpu().long() * self.num_nodes + dst.cpu().long(), t.cpu().to(torch.float64)))

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self._keys, *(k for k, _ in self._pending)])
        times = torch.cat([self._last_seen, *(t for _, t in self._pending)])
        self._pending = []
        unique, inverse = torch.unique(keys, return_inverse=True)
        last = torch.full((unique.numel(),), float("-inf"), dtype=torch.float64)
        self._keys, self._last_seen = unique, last.scatter_reduce_(0, inverse, times, reduce="amax")

    def last_seen_at(self, src: Tensor, dst: Tensor) -> Tensor:
        """Last time each pair was seen, ``-inf`` for pairs never seen.

        Shapes:
            - src, dst: ``[*]`` (any shape, same for both); output: the same shape, float64
        """
        query = src.cpu().long() * self.num_nodes + dst.cpu().long()
        keys, last_seen = self.keys, self.last_seen
        if keys.numel() == 0:
            return torch.full(query.shape, float("-inf"), dtype=torch.float64)
        position = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        found = keys[position] == query
        return torch.where(found, last_seen[position], torch.tensor(float("-inf"), dtype=torch.float64))

    def state_dict(self) -> dict[str, Tensor]:
        return {"keys": self.keys, "last_seen": self.last_seen}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._keys, self._last_seen = state["keys"].long(), state["last_seen"].double()
        self._pending = []


class EdgeBank(L.LightningModule):
    """EdgeBank as a ``LightningModule``: scores 1 for a pair seen before, else 0; nothing to learn.

    Training inserts the training events (there is no optimizer). Validation continues from
    the training events and test from the training and validation events (replayed from the
    data module when the bank has not seen them, e.g. ``trainer.test`` from a checkpoint);
    each evaluation batch is scored first and inserted after, like memory writes.

    Args:
        num_nodes: Number of nodes ``N`` of the graph.
        mode: ``"unlimited"`` (every pair seen so far) or ``"time_window"`` (pairs seen in the
            last ``time_window`` time units before the query).
        time_window: Window length for ``"time_window"``, in the stream's time units.
        edge_dim: Accepted for a uniform model signature (LightningCLI links it); unused.

    Raises:
        ValueError: on an unknown mode, or a missing or non-positive ``time_window``.
    """

    def __init__(
        self, num_nodes: int, mode: str = "unlimited", time_window: float | None = None, edge_dim: int = 0
    ) -> None:
        super().__init__()
        if mode not in EDGEBANK_MODES:
            raise ValueError(f"EdgeBank: unknown mode {mode!r}; choose one of {EDGEBANK_MODES}.")
        if mode == "time_window" and (time_window is None or time_window <= 0):
            raise ValueError(f"EdgeBank: mode 'time_window' needs a time_window > 0, got {time_window}.")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.bank = EdgeMemory(num_nodes)
        self.val_metrics = LinkEvaluation("val")
        self.test_metrics = LinkEvaluation("test")
        self._after_validation: dict[str, Tensor] | None = None  # the bank after the last validation
        self._before_validation: dict[str, Tensor] = self.bank.state_dict()

    def score(self, src: Tensor, dst: Tensor, t: Tensor) -> Tensor:
        """1.0 for pairs in the bank at time ``t``, else 0.0.

        Shapes:
            - src: ``[B]``; dst: ``[B]`` or ``[B, Q]``; t: ``[B]``; output: the shape of ``dst``
        """
        if dst.dim() == 2:
            src, t = src.unsqueeze(1).expand_as(dst), t.unsqueeze(1).expand_as(dst)
        seen = self.bank.last_seen_at(src, dst)
        if self.hparams.mode == "time_window":
            hit = seen >= t.cpu().to(torch.float64) - self.hparams.time_window
        else:
            hit = torch.isfinite(seen)
        return hit.to(torch.float32)

    def _insert(self, batch: TemporalBatch) -> None:
        self.bank.insert(batch.src, batch.dst, batch.t)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        use_data_mrr(self.trainer.datamodule, self.val_metrics, self.test_metrics)  # TGB's evaluator on a TGB set

    def configure_optimizers(self) -> None:
        return None

    def on_train_epoch_start(self) -> None:
        self.bank.clear()
        self._after_validation = None

    def training_step(self, batch: TemporalBatch, batch_idx: int) -> None:
        self._insert(batch)

    def _evaluate(self, batch: TemporalBatch, metrics: LinkEvaluation) -> None:
        pos = self.score(batch.src, batch.dst, batch.t)
        neg = self.score(batch.src, batch.neg_dst, batch.t)
        neg_mask = None if batch.neg_mask is None else batch.neg_mask.cpu()
        metrics.update(pos, neg, None if batch.new_node is None else batch.new_node.cpu(), neg_mask)
        self._insert(batch)

    def on_validation_start(self) -> None:
        self._before_validation = self.bank.state_dict()

    def validation_step(self, batch: TemporalBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def on_validation_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check must leave the bank as it was
            self.bank.load_state_dict(self._before_validation)
        else:
            self._after_validation = self.bank.state_dict()

    def on_test_start(self) -> None:
        """Start from the bank after validation: restored after an earlier test, replayed when missing."""
        if self._after_validation is not None:
            self.bank.load_state_dict(self._after_validation)
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            raise RuntimeError(
                "EdgeBank: test needs the validation events in the bank; pass a TemporalDataModule to trainer.test(...)."
            )
        for batch in datamodule.val_dataloader():
            self._insert(batch)
        self._after_validation = self.bank.state_dict()

    def test_step(self, batch: TemporalBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), prog_bar=True)
        self.test_metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["edge_bank"] = {"bank": self.bank.state_dict(), "after_validation": self._after_validation}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("edge_bank")
        if state is not None:
            self.bank.load_state_dict(state["bank"])
            self._after_validation = state["after_validation"]
