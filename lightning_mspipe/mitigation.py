"""Staleness mitigation: blend a stale node's memory with that of similar, more recently updated nodes.

For roots whose memory is older than the batch's ``quantile`` of Δt = event time − memory
time, the memory becomes ``lam · s + (1 − lam) · mean(s_u)`` over up to ``top_k`` similar
nodes ``u`` whose memory is newer than the root's. Similar nodes come from the sampled temporal
neighbours (``"neighbors"``) or from a top-k cosine-similarity table of memory
(``"cosine"``, :class:`CosineNeighbors`). Everything is a tensor operation on the batch's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemoryStore

__all__ = ["CosineNeighbors", "SIMILARITIES", "blend_stale_memory", "neighbor_candidates"]

SIMILARITIES = ("neighbors", "cosine")


class CosineNeighbors:
    """A table of each node's ``top_k`` most cosine-similar nodes by memory, rebuilt on demand.

    Only nodes that have memory (a mail was ever delivered) take part. The similarity matrix
    is computed in row chunks of ``chunk`` nodes, so memory use is ``chunk × A`` for ``A``
    active nodes, never ``N × N``; the cost is ``O(A² · D)`` per rebuild.

    Shapes:
        - table: ``[N, top_k]`` int64 node ids, ``-1`` where there is no similar node
    """

    def __init__(self, top_k: int, chunk: int = 4096) -> None:
        self.top_k, self.chunk = top_k, chunk
        self.table: Tensor | None = None

    def rebuild(self, memory: Tensor, active: Tensor) -> None:
        """Recompute the table from ``memory`` ``[N, D]`` over the ``active`` ``[N]`` bool nodes."""
        nodes = active.nonzero().squeeze(1)
        table = torch.full((memory.shape[0], self.top_k), -1, dtype=torch.int64, device=memory.device)
        if nodes.numel() > 1:
            unit = torch.nn.functional.normalize(memory[nodes].float(), dim=1)
            k = min(self.top_k, nodes.numel() - 1)
            for start in range(0, nodes.numel(), self.chunk):  # chunks of rows, not events: O(A / chunk) steps
                rows = unit[start : start + self.chunk]
                sims = rows @ unit.t()
                sims[torch.arange(rows.shape[0]), torch.arange(start, start + rows.shape[0])] = float("-inf")
                table[nodes[start : start + rows.shape[0]], :k] = nodes[sims.topk(k, dim=1).indices]
        self.table = table

    def candidates(self, roots: Tensor, store: MemoryStore) -> tuple[Tensor, Tensor, Tensor]:
        """Similar nodes of ``roots`` ``[R]`` with their current memory from ``store``:
        memory ``[R, S, D]``, time ``[R, S]``, mask ``[R, S]`` (a gather of ``R · S`` rows)."""
        if self.table is None:
            raise RuntimeError("CosineNeighbors: the table is empty; call rebuild() first.")
        similar = self.table[roots.to(self.table.device)]
        snapshot = store.gather(similar.clamp(min=0).reshape(-1).to(store.device))
        shape = similar.shape
        return snapshot.memory.view(*shape, -1), snapshot.last_update.view(shape), similar >= 0


def neighbor_candidates(batch: TemporalBatch, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The sampled neighbours of each root as similar nodes: memory ``[R, S, D]``, time ``[R, S]``, mask ``[R, S]``."""
    snapshot, index, nbrs = batch.memory, batch.memory_index, batch.neighbors
    assert snapshot is not None and index is not None and nbrs is not None
    rows = index[nbrs.num_roots :].view(nbrs.num_roots, -1)[:, :top_k]
    return snapshot.memory[rows], snapshot.last_update[rows], nbrs.mask[:, :top_k].to(rows.device)


def blend_stale_memory(
    batch: TemporalBatch,
    lam: float,
    quantile: float,
    similar_memory: Tensor,
    similar_time: Tensor,
    similar_mask: Tensor,
) -> Tensor:
    """Blend the memory of the batch's stale roots in place (``batch.memory.memory``); return which roots changed.

    A root is stale when its Δt = event time − memory time exceeds the batch's ``quantile`` of
    Δt. Its memory becomes ``lam · s + (1 − lam) · mean(s_u)`` over the similar nodes ``u``
    whose memory is newer than the root's; a stale root with no such node is left alone.

    Args:
        batch: A batch with a memory snapshot.
        lam: Weight of the root's own memory.
        quantile: Staleness quantile in ``(0, 1)``.
        similar_memory, similar_time, similar_mask: Candidates per root (see
            :func:`neighbor_candidates` and :class:`CosineNeighbors`).

    Returns:
        ``[R]`` bool, the roots whose memory was blended.

    Shapes:
        - similar_memory: ``[R, S, D]``; similar_time, similar_mask: ``[R, S]``
    """
    snapshot, index = batch.memory, batch.memory_index
    assert snapshot is not None and index is not None and batch.neighbors is not None
    root_rows = index[: batch.neighbors.num_roots]
    root_time = snapshot.last_update[root_rows]
    delta = batch.root_times().to(root_time.device) - root_time
    stale = delta > torch.quantile(delta, quantile)
    newer = similar_mask & (similar_time > root_time.unsqueeze(1))
    count = newer.sum(dim=1, keepdim=True)
    blended = stale & (count.squeeze(1) > 0)
    memory = snapshot.memory
    mean = (similar_memory * newer.unsqueeze(-1)).sum(dim=1) / count.clamp(min=1)
    mixed = lam * memory[root_rows] + (1.0 - lam) * mean.to(memory.dtype)
    memory[root_rows[blended]] = mixed[blended]
    return blended
