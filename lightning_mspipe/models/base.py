"""MemoryTGNN: the LightningModule shared by TGN, JODIE and APAN, wrapping a :class:`MemoryNetwork`."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_mspipe.allocator import keep_freed_cpu_memory
from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.epoch_stop import epoch_stopped_early, mark_epoch_unfinished
from lightning_mspipe.memory.exchange import MemoryWriteExchange
from lightning_mspipe.memory.phases import MemoryPhases
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite
from lightning_mspipe.memory.writer import DirectWriter, MemoryWriter
from lightning_mspipe.models.evaluation import LinkEvaluation, use_data_mrr
from lightning_mspipe.models.network import MemoryNetwork, StepOutput
from lightning_mspipe.pipeline.stages import fetch_memory
from lightning_mspipe.staleness_mitigation import StalenessMitigation

__all__ = ["MemoryTGNN"]


class MemoryTGNN(L.LightningModule):
    """A memory-based temporal GNN for link prediction on an event stream.

    The network (memory store, updater, embedding, predictor) is a plain ``nn.Module``,
    ``self.net``, an instance of the class attribute ``network_class`` (a
    :class:`~lightning_mspipe.models.network.MemoryNetwork`; TGN, JODIE and APAN each set theirs),
    so it also runs from plain PyTorch or Fabric. This module adds what Lightning needs: the
    loss, metrics, the memory phases and checkpoints. One step (stage 4) consumes a
    :class:`~lightning_mspipe.data.batch.TemporalBatch` that carries its sampled neighbours,
    features and a memory snapshot (stages 1–3; the step fetches the snapshot itself when a
    batch arrives without one), runs the network and returns the loss. Its last act is to hand the
    batch's memory write-back (stage 5) to the model's :attr:`memory_writer`
    (:mod:`lightning_mspipe.memory.writer`): a :class:`~lightning_mspipe.memory.writer.DirectWriter`
    applies it at once; a pipeline strategy hands the model its own writer with
    :meth:`use_memory_writer`. The write is computed from the step's forward pass (detached), so
    it is the same before or after the optimizer step; handing it over inside the step means a
    checkpoint written by any callback after the batch holds it. (An optimizer that evaluates
    its closure several times per step, such as LBFGS, would write memory several times: not
    supported.) The writer is flushed before an epoch ends, before validation and when training
    ends.

    Staleness mitigation has a seam of its own (:meth:`use_staleness_mitigation`): the step
    first lets the model's :class:`~lightning_mspipe.staleness_mitigation.StalenessMitigation`
    blend a stale batch's memory, reading live memory through the memory writer
    (``live_memory``); every training epoch's end hands it the memory, and the model's
    checkpoints keep its state (``"staleness_mitigation"``).

    Memory protocol: reset at the start of every training epoch; validation continues from
    the memory after training, test from the memory after validation (see
    :class:`~lightning_mspipe.memory.phases.MemoryPhases`).

    Args:
        lr: Adam learning rate.
        The others: as :class:`~lightning_mspipe.models.network.MemoryNetwork` (``num_nodes``,
        ``edge_dim``, ``memory_dim``, ``time_dim``, ``embedding_dim``, ``dropout``,
        ``mailbox_size``, ``heads``, ``pin_memory``, ``deliver_to``).
    """

    network_class: type[MemoryNetwork] = MemoryNetwork

    def __init__(
        self,
        num_nodes: int,
        edge_dim: int = 0,
        memory_dim: int = 100,
        time_dim: int = 100,
        embedding_dim: int = 100,
        dropout: float = 0.1,
        lr: float = 1e-3,
        mailbox_size: int | None = None,
        heads: int = 2,
        pin_memory: bool = False,
        deliver_to: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = self.network_class(
            num_nodes, edge_dim, memory_dim, time_dim, embedding_dim, dropout, mailbox_size, heads, pin_memory,
            deliver_to,
        )
        self.phases = MemoryPhases(self.memory)
        self.val_metrics = LinkEvaluation("val")
        self.test_metrics = LinkEvaluation("test")
        self._memory_writer: MemoryWriter = DirectWriter(self.memory)
        self._mitigation: StalenessMitigation | None = None

    # ------------------------------------------------------------------ the network
    @property
    def memory(self) -> MemoryStore:
        """The network's memory store."""
        return self.net.memory

    def forward(self, batch: TemporalBatch) -> StepOutput:
        """Scores of the batch's positives and negatives (stage 4 without the loss); fetches the
        batch's memory snapshot first when it arrives without one."""
        if batch.memory is None:
            batch = fetch_memory(self.memory, batch, self.device)
        return self.net(batch)

    @staticmethod
    def link_loss(pos: Tensor, neg: Tensor) -> Tensor:
        """Binary cross-entropy of positives against all negatives (scalar)."""
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
            neg, torch.zeros_like(neg)
        )

    def memory_write(self, batch: TemporalBatch, memory: Tensor) -> MemoryWrite:
        """The batch's write-back (see :meth:`MemoryNetwork.memory_write`)."""
        return self.net.memory_write(batch, memory)

    # ------------------------------------------------------------------ stage 5: write memory
    @property
    def memory_writer(self) -> MemoryWriter:
        """Where training steps hand their memory writes (see :mod:`lightning_mspipe.memory.writer`)."""
        return self._memory_writer

    def apply_memory_write(self, write: MemoryWrite) -> int:
        """Apply a write outside the training pipeline (a plain step, validation, test); returns the new version.

        Under a strategy that keeps one memory on several ranks (a
        :class:`~lightning_mspipe.memory.exchange.MemoryWriteExchange`) the write of every rank is
        gathered and merged first: a collective, so every rank must call it for the same batch.
        """
        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, MemoryWriteExchange):
            write = strategy.exchange_memory_write(write)
        return self.memory.scatter(write)

    def use_memory_writer(self, writer: MemoryWriter | None) -> None:
        """Hand the training writes to ``writer`` from now on; ``None`` restores the direct writer.

        Raises:
            TypeError: ``writer`` lacks ``submit_write``, ``flush_writes`` or ``live_memory``.
        """
        if writer is not None and not isinstance(writer, MemoryWriter):
            raise TypeError(
                f"{type(self).__name__}.use_memory_writer: {type(writer).__name__} is not a MemoryWriter; it needs "
                "submit_write(index, write), flush_writes() and live_memory(index) (see lightning_mspipe.memory.writer)."
            )
        self._memory_writer = writer if writer is not None else DirectWriter(self.memory)

    def flush_memory_writes(self) -> None:
        """Block until every memory write handed to the writer is committed."""
        self._memory_writer.flush_writes()

    # ------------------------------------------------------------------ staleness mitigation
    @property
    def staleness_mitigation(self) -> StalenessMitigation | None:
        """The mitigation applied to stale training batches, or ``None``."""
        return self._mitigation

    def use_staleness_mitigation(self, mitigation: StalenessMitigation | None) -> None:
        """Blend the memory of stale training batches with ``mitigation`` from now on; ``None`` stops it.

        Raises:
            TypeError: ``mitigation`` is not a :class:`~lightning_mspipe.staleness_mitigation.StalenessMitigation`.
        """
        if mitigation is not None and not isinstance(mitigation, StalenessMitigation):
            raise TypeError(
                f"{type(self).__name__}.use_staleness_mitigation: expected a StalenessMitigation, got "
                f"{type(mitigation).__name__}."
            )
        self._mitigation = mitigation

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        if self._trainer is not None and self.trainer.strategy.root_device.type == "cpu":
            keep_freed_cpu_memory()  # steps reuse freed memory instead of page-faulting (allocator.py)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        use_data_mrr(datamodule, self.val_metrics, self.test_metrics)  # a TGB set ranks with TGB's evaluator
        if datamodule is None or not hasattr(datamodule, "num_nodes"):
            return
        name = type(self).__name__
        if datamodule.num_nodes > self.hparams.num_nodes:
            raise ValueError(
                f"{name}: the data has {datamodule.num_nodes} nodes but the model was built for "
                f"num_nodes={self.hparams.num_nodes}; node ids ≥ {self.hparams.num_nodes} have no memory row. "
                "Build the model with num_nodes=datamodule.num_nodes."
            )
        if datamodule.edge_dim != self.hparams.edge_dim:
            raise ValueError(
                f"{name}: the data has edge features of width {datamodule.edge_dim} but the model was built "
                f"for edge_dim={self.hparams.edge_dim}. Build the model with edge_dim=datamodule.edge_dim."
            )

    def on_train_epoch_start(self) -> None:
        self.phases.start_training_epoch()
        loader = self.trainer.train_dataloader
        if hasattr(loader, "set_epoch"):  # seeds the epoch's negatives, also after a resume
            loader.set_epoch(self.current_epoch)

    def training_step(self, batch: TemporalBatch, batch_idx: int) -> Tensor:
        if self._mitigation is not None:
            with torch.autocast(self.device.type, enabled=False):  # the blend and the cosine table in full precision
                self._mitigation.before_step(batch, lambda: self._memory_writer.live_memory(batch.index))
        out = self(batch)
        loss = self.link_loss(out.pos, out.neg)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.size)
        self._memory_writer.submit_write(batch.index, self.memory_write(batch, out.memory.detach()))  # stage 5
        return loss

    def on_train_epoch_end(self) -> None:
        self.flush_memory_writes()
        if self._mitigation is not None:  # a cut epoch (max_steps) resumes: its cosine table is kept
            self._mitigation.end_epoch(self.memory, complete=not epoch_stopped_early(self.trainer))
            self.log("mitigation/blended_share", self._mitigation.blended_share)

    def on_train_end(self) -> None:
        self.flush_memory_writes()

    def _evaluate(self, batch: TemporalBatch, metrics: LinkEvaluation | None) -> None:
        out = self(batch)
        if metrics is not None:
            metrics.update(out.pos, out.neg, batch.new_node, batch.neg_mask)
        self.apply_memory_write(self.memory_write(batch, out.memory))

    def on_validation_start(self) -> None:
        self.flush_memory_writes()  # validation continues from the memory of every training batch so far
        self.phases.start_validation(self.trainer.sanity_checking)

    def validation_step(self, batch: TemporalBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def on_validation_end(self) -> None:
        self.phases.end_validation(training_continues=self._validating_mid_epoch())

    def _validating_mid_epoch(self) -> bool:
        """Whether this validation interrupts a training epoch (``val_check_interval < 1``)."""
        trainer = self.trainer
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return False
        progress = trainer.fit_loop.epoch_loop.batch_progress
        return not progress.is_last_batch and progress.current.ready < trainer.num_training_batches

    def on_test_start(self) -> None:
        self.phases.start_test(self._replay_validation)

    def test_step(self, batch: TemporalBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def _log_metrics(self, metrics: LinkEvaluation) -> None:
        if not self.trainer.sanity_checking:
            self.log_dict(metrics.compute(), prog_bar=True)
        metrics.reset()

    @torch.no_grad()
    def _replay_validation(self) -> None:
        """Apply the validation events to memory (no metrics): test needs memory as it was after validation."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            raise RuntimeError(
                f"{type(self).__name__}: test needs the memory after validation, but this model's memory has not "
                "seen the validation events and there is no datamodule to replay them from. "
                "Pass a TemporalDataModule to trainer.test(...)."
            )
        was_training = self.training
        self.eval()
        for batch in datamodule.val_dataloader():
            self._evaluate(batch.to(self.device), None)
        self.train(was_training)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the fused kernel updates every parameter in one call: on CPU, 0.36 ms per step for
        # TGN's 26 tensors against 1.26 ms for the default per-tensor loop
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=fused)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the memory phases, the RNG states (an exact resume replays dropout identically) and the
        staleness mitigation's state; a checkpoint of an epoch that ``max_steps``/``max_time`` cut short
        resumes that epoch mid-way (see :mod:`lightning_mspipe.epoch_stop`)."""
        checkpoint["memory_phases"] = self.phases.state_dict()
        checkpoint["rng_states"] = rng_states()
        if self._mitigation is not None:
            checkpoint["staleness_mitigation"] = self._mitigation.state_dict()
        if self._trainer is not None:
            mark_epoch_unfinished(self.trainer, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "memory_phases" in checkpoint:
            self.phases.load_state_dict(checkpoint["memory_phases"])
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        if self._mitigation is not None and "staleness_mitigation" in checkpoint:
            self._mitigation.load_state_dict(checkpoint["staleness_mitigation"])


def rng_states() -> dict[str, Any]:
    """The CPU and (where present) CUDA random generator states."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_states` (the CUDA ones only where CUDA is present)."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
