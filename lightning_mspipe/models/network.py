"""MemoryNetwork: the network of a memory-based TGNN as a plain ``nn.Module``.

The memory store, memory updater, embedding and link predictor of TGN, JODIE and APAN, with no
Lightning in sight: a training loop in plain PyTorch or Fabric fetches a batch's memory
(:func:`~lightning_mspipe.pipeline.stages.fetch_memory`), calls the network, steps its optimizer
and applies :meth:`MemoryNetwork.memory_write`. :class:`~lightning_mspipe.models.base.MemoryTGNN`
wraps one for Lightning (metrics, memory phases, checkpoints, the pipeline's stage 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.layers import LinkPredictor
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite, last_occurrence
from lightning_mspipe.memory.updaters import MemoryUpdater

__all__ = ["MAIL_DELIVERY", "MemoryNetwork", "StepOutput", "identity_or_linear", "snapshot_endpoint_rows"]

#: Values of ``deliver_to``.
MAIL_DELIVERY: tuple[str, ...] = ("self", "neighbors")


@dataclass
class StepOutput:
    """Scores of one batch and the memory its updater produced.

    Shapes:
        - pos: ``[B]`` logits; neg: ``[B, Q]`` logits; memory: :meth:`MemoryNetwork.update_memory`'s
          output, ``[U, D]`` (rows of ``batch.memory``) or ``[R, D]`` (one per root)
    """

    pos: Tensor
    neg: Tensor
    memory: Tensor


class MemoryNetwork(nn.Module):
    """Memory store, updater, embedding and link predictor of a memory-based temporal GNN.

    ``forward(batch)`` takes a :class:`~lightning_mspipe.data.batch.TemporalBatch` with sampled
    neighbours, features and a memory snapshot (stages 1–3), updates the snapshot's memory with
    the pending mails, embeds the roots (:meth:`embed`, per model) and scores positives and
    negatives. :meth:`memory_write` makes the batch's write-back (stage 5). Subclasses choose
    the updater (:meth:`build_updater`) and the embedding (:meth:`build_embedding`, :meth:`embed`).

    Args:
        num_nodes: Number of nodes ``N`` of the graph.
        edge_dim: Width of the edge features (0: none).
        memory_dim: Memory width ``D``.
        time_dim: Width of time encodings.
        embedding_dim: Width of node embeddings.
        dropout: Dropout probability.
        mailbox_size: Mails kept per node (default per model: 1, APAN 10).
        heads: Attention heads (TGN's embedding, APAN's updater).
        pin_memory: Keep the memory store in pinned host memory instead of on the compute device.
        deliver_to: Who receives an event's mails: ``"self"`` (its two endpoints; TGN, JODIE) or
            ``"neighbors"`` (also the endpoints' sampled temporal neighbours; APAN), as TGL's
            ``deliver_to`` option; ``None`` takes the model's default.

    Raises:
        ValueError: on sizes out of range or an unknown ``deliver_to``.
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
        self.num_nodes, self.edge_dim, self.memory_dim = num_nodes, edge_dim, memory_dim
        self.time_dim, self.embedding_dim, self.dropout, self.heads = time_dim, embedding_dim, dropout, heads
        self.deliver_to = deliver_to or self.default_deliver_to
        self.mail_dim = 2 * memory_dim + edge_dim
        self.memory = MemoryStore(num_nodes, memory_dim, self.mail_dim, mailbox_size or self.default_mailbox_size,
                                  pin_memory)
        self.updater = self.build_updater()
        self.embedding = self.build_embedding()
        self.predictor = LinkPredictor(embedding_dim)

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
            - returned: ``[V]`` receivers with their mails ``[V, D_mail]`` and times ``[V]``; the
              endpoints' own mails are the last ``2B`` (:meth:`memory_write` relies on it)
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
            raise ValueError(
                f"{type(self).__name__}: batch {batch.index} has no memory snapshot; fetch it first with "
                "lightning_mspipe.pipeline.stages.fetch_memory(net.memory, batch)."
            )
        memory = self.update_memory(batch)
        emb = self.embed(batch, memory)
        size, q = batch.size, batch.num_negatives
        h_src, h_dst, h_neg = emb[:size], emb[size : 2 * size], emb[2 * size :].view(q, size, -1)
        pos = self.predictor(h_src, h_dst)
        neg = self.predictor.many(h_src, h_neg)
        return StepOutput(pos=pos, neg=neg, memory=memory)

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
        if batch.edge_feat is not None and self.edge_dim:
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
            own_mail=last_mail >= mail_nodes.numel() - nodes.numel(),  # mail_receivers puts the endpoints last
        )


def snapshot_endpoint_rows(batch: TemporalBatch) -> Tensor:
    """Snapshot row of each event endpoint in event order (src, dst of event 0, then 1, …): ``[2B]``."""
    assert batch.memory_index is not None
    size = batch.size
    return torch.stack([batch.memory_index[:size], batch.memory_index[size : 2 * size]], dim=1).reshape(-1)


def identity_or_linear(in_dim: int, out_dim: int) -> nn.Module:
    """``nn.Identity`` when the widths agree, else a linear map."""
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)
