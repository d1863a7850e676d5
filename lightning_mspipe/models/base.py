"""MemoryTGNN: the LightningModule shared by TGN, JODIE and APAN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.phases import MemoryPhases
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite, last_occurrence
from lightning_mspipe.memory.updaters import MemoryUpdater
from lightning_mspipe.models.evaluation import LinkEvaluation
from lightning_mspipe.layers import LinkPredictor
from lightning_mspipe.pipeline.stages import fetch_memory

__all__ = ["MAIL_DELIVERY", "MemoryTGNN", "StepOutput", "snapshot_endpoint_rows"]

#: Values of ``MemoryTGNN(deliver_to=...)``.
MAIL_DELIVERY: tuple[str, ...] = ("self", "neighbors")


@dataclass
class StepOutput:
    """Scores of one batch and the memory its updater produced.

    Shapes:
        - pos: ``[B]`` logits; neg: ``[B, Q]`` logits; memory: :meth:`MemoryTGNN.update_memory`'s
          output, ``[U, D]`` (rows of ``batch.memory``) or ``[R, D]`` (one per root)
    """

    pos: Tensor
    neg: Tensor
    memory: Tensor


class MemoryTGNN(L.LightningModule):
    """A memory-based temporal GNN for link prediction on an event stream.

    One step (stage 4) consumes a :class:`~lightning_mspipe.data.batch.TemporalBatch` that
    carries its sampled neighbours, features and a memory snapshot (stages 1–3; the step fetches
    the snapshot itself when a batch arrives without one). It updates the snapshot's memory
    with the pending mails, embeds the roots (:meth:`embed`, per model), scores positives
    against negatives and returns the loss. The memory write-back (stage 5,
    :meth:`write_memory`) runs after the optimizer step, in :meth:`on_train_batch_end`, unless a
    pipeline strategy takes it over (``self.memory_writes_in_hooks = False``).

    Memory protocol: reset at the start of every training epoch; validation continues from
    the memory after training, test from the memory after validation (see
    :class:`~lightning_mspipe.memory.phases.MemoryPhases`).

    Args:
        num_nodes: Number of nodes ``N`` of the graph.
        edge_dim: Width of the edge features (0: none).
        memory_dim: Memory width ``D``.
        time_dim: Width of time encodings.
        embedding_dim: Width of node embeddings.
        dropout: Dropout probability.
        lr: Adam learning rate.
        mailbox_size: Mails kept per node (default per model: 1, APAN 10).
        heads: Attention heads (TGN's embedding, APAN's updater).
        pin_memory: Keep the memory store in pinned host memory instead of on the compute device.
        deliver_to: Who receives an event's mails: ``"self"`` (its two endpoints; TGN, JODIE) or
            ``"neighbors"`` (also the endpoints' sampled temporal neighbours; APAN), as TGL's
            ``deliver_to`` option; ``None`` takes the model's default.
    """

    default_mailbox_size = 1
    default_deliver_to = "self"

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
        for name, value in (("num_nodes", num_nodes), ("memory_dim", memory_dim), ("time_dim", time_dim),
                            ("embedding_dim", embedding_dim)):
            if value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be ≥ 1, got {value}.")
        if edge_dim < 0:
            raise ValueError(f"{type(self).__name__}: edge_dim must be ≥ 0, got {edge_dim}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}.")
        if deliver_to not in (None, *MAIL_DELIVERY):
            raise ValueError(
                f"{type(self).__name__}: unknown deliver_to {deliver_to!r}; choose one of {MAIL_DELIVERY}."
            )
        mailbox_size = mailbox_size or self.default_mailbox_size
        self.deliver_to = deliver_to or self.default_deliver_to
        self.save_hyperparameters()
        self.mail_dim = 2 * memory_dim + edge_dim
        self.memory = MemoryStore(num_nodes, memory_dim, self.mail_dim, mailbox_size, pin_memory)
        self.updater = self.build_updater()
        self.embedding = self.build_embedding()
        self.predictor = LinkPredictor(embedding_dim)
        self.phases = MemoryPhases(self.memory)
        self.val_metrics = LinkEvaluation("val")
        self.test_metrics = LinkEvaluation("test")
        self.memory_writes_in_hooks = True
        self._pending_write: MemoryWrite | None = None

    # ------------------------------------------------------------------ model parts
    def build_updater(self) -> MemoryUpdater:
        """The memory updater of this model."""
        raise NotImplementedError

    def build_embedding(self) -> nn.Module:
        """The embedding module of this model (used by :meth:`embed`)."""
        raise NotImplementedError

    def update_memory(self, batch: TemporalBatch) -> Tensor:
        """Updated memory of the batch: by default one row per snapshot row, ``[U, D]``.

        A model whose memory depends on the query time (APAN) returns one row per root instead
        and overrides :meth:`endpoint_rows` to match.
        """
        return self.updater(batch.memory)

    def endpoint_rows(self, batch: TemporalBatch) -> Tensor:
        """Row of :meth:`update_memory`'s output for each event endpoint, in event order
        (source and destination of event 0, then of event 1, …): ``[2B]``."""
        return snapshot_endpoint_rows(batch)

    def embed(self, batch: TemporalBatch, memory: Tensor) -> Tensor:
        """Embeddings ``[R, embedding_dim]`` of the batch's roots from :meth:`update_memory`'s output."""
        raise NotImplementedError

    def mail_receivers(
        self, batch: TemporalBatch, nodes: Tensor, mails: Tensor, times: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Who receives the batch's mails: the endpoints, and with ``deliver_to="neighbors"`` first
        the sampled neighbours of each endpoint (so an endpoint's own mail wins over one delivered
        to it as a neighbour, under "last occurrence wins").

        Shapes:
            - nodes: ``[2B]`` endpoints in event order (src, dst of event 0, then of event 1, …);
              mails: ``[2B, D_mail]``; times: ``[2B]``
            - returned: ``[V]`` receivers with their mails ``[V, D_mail]`` and times ``[V]``
        """
        if self.deliver_to == "self":
            return nodes, mails, times
        nbrs, size = batch.neighbors, batch.size
        endpoint_nodes = nbrs.nodes[: 2 * size].view(2, size, -1).transpose(0, 1).reshape(2 * size, -1)  # event order
        endpoint_mask = nbrs.mask[: 2 * size].view(2, size, -1).transpose(0, 1).reshape(2 * size, -1)
        slot_owner = torch.arange(2 * size, device=nodes.device).unsqueeze(1).expand_as(endpoint_mask)[endpoint_mask]
        return (
            torch.cat([endpoint_nodes[endpoint_mask].to(nodes.device), nodes]),
            torch.cat([mails[slot_owner], mails]),
            torch.cat([times[slot_owner], times]),
        )

    def root_memory(self, batch: TemporalBatch, memory: Tensor) -> Tensor:
        """Rows of ``memory`` ``[U, D]`` for each root: ``[R, D]``."""
        assert batch.memory_index is not None
        return memory.index_select(0, batch.memory_index[: batch.neighbors.num_roots])

    def neighbor_rows(self, batch: TemporalBatch) -> Tensor:
        """Row of the snapshot for each neighbour slot: ``[R, K]``."""
        assert batch.memory_index is not None and batch.neighbors is not None
        roots, k = batch.neighbors.num_roots, batch.neighbors.k
        return batch.memory_index[roots:].view(roots, k)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: TemporalBatch) -> StepOutput:
        """Scores of the batch's positives and negatives (stage 4 without the loss)."""
        if batch.memory is None:
            batch = fetch_memory(self.memory, batch, self.device)
        memory = self.update_memory(batch)
        emb = self.embed(batch, memory)
        size, q = batch.size, batch.num_negatives
        h_src, h_dst, h_neg = emb[:size], emb[size : 2 * size], emb[2 * size :].view(q, size, -1)
        pos = self.predictor(h_src, h_dst)
        neg = self.predictor.many(h_src, h_neg)
        return StepOutput(pos=pos, neg=neg, memory=memory)

    @staticmethod
    def link_loss(pos: Tensor, neg: Tensor) -> Tensor:
        """Binary cross-entropy of positives against all negatives (scalar)."""
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
            neg, torch.zeros_like(neg)
        )

    # ------------------------------------------------------------------ stage 5: write memory
    def memory_write(self, batch: TemporalBatch, memory: Tensor) -> MemoryWrite:
        """The batch's write-back: new memory of its endpoints and one mail per receiver.

        Only true sources and destinations are written, never negatives; a node that occurs in
        several events of the batch keeps its last event. The mail of an event for node ``v``
        is ``[s'_v ‖ s'_other ‖ edge_feat]`` at the event's time, with ``s'`` the updated memory.

        Shapes:
            - memory: :meth:`update_memory`'s output (detached), ``[U, D]`` or ``[R, D]``
        """
        assert batch.memory_index is not None and batch.memory is not None
        rows = self.endpoint_rows(batch)
        snapshot_rows = snapshot_endpoint_rows(batch)
        nodes = torch.stack([batch.src, batch.dst], dim=1).reshape(-1).to(rows.device)
        times = batch.t.repeat_interleave(2).to(rows.device)
        other = rows.view(-1, 2).flip(1).reshape(-1)
        parts = [memory[rows], memory[other]]
        if batch.edge_feat is not None and self.hparams.edge_dim:
            parts.append(batch.edge_feat.to(memory.dtype).repeat_interleave(2, dim=0))
        mails = torch.cat(parts, dim=1)

        written, last = last_occurrence(nodes)
        last_event = batch.memory.last_event_time()
        mail_nodes, mail_data, mail_times = self.mail_receivers(batch, nodes, mails, times)
        receivers, last_mail = last_occurrence(mail_nodes)
        return MemoryWrite(
            nodes=written,
            memory=memory[rows[last]],
            last_update=last_event[snapshot_rows[last]],
            mail_nodes=receivers,
            mail=mail_data[last_mail],
            mail_ts=mail_times[last_mail],
        )

    def write_memory(self) -> int:
        """Stage 5: apply the pending write of the last training step; returns the new memory version."""
        if self._pending_write is None:
            raise RuntimeError(
                f"{type(self).__name__}.write_memory: no pending memory write; each training step makes one."
            )
        write, self._pending_write = self._pending_write, None
        return self.memory.scatter(write)

    def pop_pending_write(self) -> MemoryWrite | None:
        """Take the pending write (for a strategy that applies writes itself)."""
        write, self._pending_write = self._pending_write, None
        return write

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
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
        out = self(batch)
        loss = self.link_loss(out.pos, out.neg)
        self._pending_write = self.memory_write(batch, out.memory.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.memory_writes_in_hooks:
            self.write_memory()

    def _evaluate(self, batch: TemporalBatch, metrics: LinkEvaluation | None) -> None:
        out = self(batch)
        if metrics is not None:
            metrics.update(out.pos, out.neg, batch.new_node)
        self.memory.scatter(self.memory_write(batch, out.memory))

    def on_validation_start(self) -> None:
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
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["memory_phases"] = self.phases.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "memory_phases" in checkpoint:
            self.phases.load_state_dict(checkpoint["memory_phases"])


def snapshot_endpoint_rows(batch: TemporalBatch) -> Tensor:
    """Snapshot row of each event endpoint in event order (src, dst of event 0, then 1, …): ``[2B]``."""
    assert batch.memory_index is not None
    size = batch.size
    return torch.stack([batch.memory_index[:size], batch.memory_index[size : 2 * size]], dim=1).reshape(-1)


def _identity_or_linear(in_dim: int, out_dim: int) -> nn.Module:
    """``nn.Identity`` when the widths agree, else a linear map."""
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)
