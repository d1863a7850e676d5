"""Staleness mitigation: blend a stale root's memory with that of similar nodes updated since.

A root occurrence (source, destination or negative of one event) is stale when its
Δt = event time − memory time exceeds the batch's ``quantile`` of Δt. Its memory becomes
``lam · s + (1 − lam) · mean(s_u)`` over up to ``top_k`` similar nodes ``u`` whose memory is
newer than the root's snapshot. The candidates' memory is read from the **live** store, not
from the batch's stale snapshot, so the blend injects writes the snapshot missed (MSPipe's
method). Similar nodes are the root's sampled temporal neighbours (``"neighbors"``) or a
top-k cosine-similarity table of memory (``"cosine"``,
:class:`~lightning_mspipe.similarity.CosineNeighbors`).

The blend is per occurrence: each blended occurrence gets its own new row in the batch's
snapshot (a copy of its node's row with the blended memory) and ``memory_index`` points it
there, so the node's other occurrences, its appearances as a neighbour, and every other row
keep the snapshot's memory, and no row is written twice. Everything is a tensor operation on
the batch's device; the selections (stale occurrences, those with a newer candidate) sync with
the host once each.

:func:`refresh_roots` is the other remedy: it replaces the roots' snapshot rows by their live
rows, so each root sees every write committed before its step (in ``exact`` mode, those of every
earlier batch: its memory is then what synchronous training would read).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore

__all__ = ["Candidates", "SIMILARITIES", "append_rows", "blend_stale_occurrences", "neighbor_candidates",
           "refresh_roots", "stale_roots"]

SIMILARITIES = ("neighbors", "cosine")


class Candidates(NamedTuple):
    """Similar nodes of ``b`` stale root occurrences, with memory read from the live store.

    Shapes:
        - memory: ``[b, S, D]``; time (their last update): ``[b, S]`` float64; mask: ``[b, S]`` bool
    """

    memory: Tensor
    time: Tensor
    mask: Tensor


def stale_roots(batch: TemporalBatch, quantile: float) -> Tensor:
    """Positions ``[b]`` (into the ``R`` roots) of the occurrences whose Δt exceeds the batch's ``quantile``.

    Δt = the occurrence's event time − its node's memory time in the snapshot.
    """
    snapshot, index = batch.memory, batch.memory_index
    assert snapshot is not None and index is not None and batch.neighbors is not None
    root_time = snapshot.last_update[index[: batch.neighbors.num_roots]]
    delta = batch.root_times().to(root_time.device) - root_time
    return (delta > torch.quantile(delta, quantile)).nonzero().squeeze(1)


def neighbor_candidates(batch: TemporalBatch, positions: Tensor, top_k: int, store: MemoryStore) -> Candidates:
    """The sampled neighbours of the root occurrences at ``positions`` ``[b]``, their memory read from ``store``.

    Costs a gather of ``b · min(top_k, K)`` rows under the store's lock.
    """
    nbrs = batch.neighbors
    assert nbrs is not None
    positions = positions.to(nbrs.nodes.device)
    nodes, mask = nbrs.nodes[positions, :top_k], nbrs.mask[positions, :top_k]
    live = store.gather(nodes.reshape(-1).to(store.device))
    return Candidates(live.memory.view(*nodes.shape, -1), live.last_update.view(nodes.shape), mask)


def refresh_roots(batch: TemporalBatch, store: MemoryStore) -> Tensor:
    """Replace the snapshot rows of the batch's roots by their live rows in ``store``; return how many
    rows changed (a 0-dim tensor on the batch's device, so the step need not sync for it).

    Every field of a root's row is replaced (memory, last update, mailbox), so the row is the
    live one as a whole; neighbour rows keep the snapshot's. ``batch.memory`` becomes a new
    snapshot (the old one's tensors are not written). Costs a gather of the ``u`` distinct root
    rows under the store's lock.

    Shapes:
        - the snapshot keeps its ``U`` rows; ``u ≤ R`` of them are read from ``store``
    """
    snapshot, index = batch.memory, batch.memory_index
    assert snapshot is not None and index is not None and batch.neighbors is not None
    device = snapshot.memory.device
    rows = torch.unique(index[: batch.neighbors.num_roots]).to(device)
    live = store.gather(snapshot.nodes[rows].to(store.device))
    fields = ("memory", "last_update", "mailbox", "mail_ts", "mail_mask")
    fresh = {name: getattr(live, name).to(device) for name in fields}
    changed = torch.zeros(rows.numel(), dtype=torch.bool, device=device)
    for name in fields:
        changed |= (fresh[name] != getattr(snapshot, name)[rows]).reshape(rows.numel(), -1).any(dim=1)
    batch.memory = MemorySnapshot(
        nodes=snapshot.nodes, version=snapshot.version,
        **{name: getattr(snapshot, name).index_copy(0, rows, fresh[name].to(getattr(snapshot, name).dtype))
           for name in fields},
    )
    return changed.sum()


def append_rows(snapshot: MemorySnapshot, rows: Tensor, memory: Tensor) -> MemorySnapshot:
    """The snapshot with copies of ``rows`` ``[b]`` appended (rows ``U … U + b − 1``), their memory replaced.

    Shapes:
        - memory: ``[b, D]``; the result has ``U + b`` rows
    """
    def grow(values: Tensor, new: Tensor | None = None) -> Tensor:
        return torch.cat([values, values[rows] if new is None else new.to(values.dtype)])

    return MemorySnapshot(nodes=grow(snapshot.nodes), memory=grow(snapshot.memory, memory),
                          last_update=grow(snapshot.last_update), mailbox=grow(snapshot.mailbox),
                          mail_ts=grow(snapshot.mail_ts), mail_mask=grow(snapshot.mail_mask), version=snapshot.version)


def blend_stale_occurrences(batch: TemporalBatch, positions: Tensor, lam: float, candidates: Candidates) -> Tensor:
    """Blend the memory of the stale root occurrences at ``positions``; return which roots changed.

    An occurrence with at least one candidate newer than its snapshot memory gets
    ``lam · s + (1 − lam) · mean(s_u)`` over those candidates, in a new snapshot row of its own
    (:func:`append_rows`); ``batch.memory`` and ``batch.memory_index`` are replaced. An
    occurrence with no newer candidate is left alone.

    Args:
        batch: A batch with a memory snapshot.
        positions: ``[b]`` stale occurrences (see :func:`stale_roots`).
        lam: Weight of the root's own memory.
        candidates: The occurrences' similar nodes (:func:`neighbor_candidates`,
            :meth:`~lightning_mspipe.similarity.CosineNeighbors.candidates`).

    Returns:
        ``[R]`` bool, the root occurrences whose memory was blended.
    """
    snapshot, index, nbrs = batch.memory, batch.memory_index, batch.neighbors
    assert snapshot is not None and index is not None and nbrs is not None
    device = snapshot.memory.device
    positions = positions.to(index.device)
    rows = index[positions].to(device)
    own_time = snapshot.last_update[rows]
    cand_time, cand_mask = candidates.time.to(device), candidates.mask.to(device)
    newer = cand_mask & (cand_time > own_time.unsqueeze(1))  # [b, S]
    count = newer.sum(dim=1)
    has_newer = count > 0
    weights = newer[has_newer].unsqueeze(-1).to(snapshot.memory.dtype)
    mean = (candidates.memory.to(device)[has_newer] * weights).sum(dim=1) / count[has_newer].unsqueeze(1)
    mixed = lam * snapshot.memory[rows[has_newer]] + (1.0 - lam) * mean
    first_new = snapshot.memory.shape[0]
    batch.memory = append_rows(snapshot, rows[has_newer], mixed)
    chosen = positions[has_newer.to(positions.device)]
    new_index = index.clone()
    new_index[chosen] = torch.arange(first_new, first_new + chosen.numel(), device=index.device)
    batch.memory_index = new_index
    blended = torch.zeros(nbrs.num_roots, dtype=torch.bool, device=index.device)
    blended[chosen] = True
    return blended
