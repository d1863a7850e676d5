"""Batch containers that flow from the data module through the pipeline stages into the model.

Stage 1 (sample) and stage 2 (fetch features) fill a :class:`TemporalBatch`; stage 3 (fetch
memory) attaches a memory snapshot (``batch.memory``), which the model's step consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["NeighborBlock", "TemporalBatch", "map_tensors", "tensors_of", "with_tensors"]


def _move(value: Any, device: torch.device | str, non_blocking: bool) -> Any:
    """Move tensors and objects with a ``.to`` method; leave plain values as they are."""
    return value.to(device, non_blocking=non_blocking) if hasattr(value, "to") else value


class _Transferable:
    """Mixin for dataclasses of tensors: device moves, pinning and stream bookkeeping of every field."""

    def _map(self, fn: Any) -> Any:
        changes = {f.name: fn(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]
        return type(self)(**changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Any:
        """A copy with every tensor on ``device`` (what Lightning's batch transfer calls)."""
        return self._map(lambda value: _move(value, device, non_blocking))

    def pin_memory(self) -> Any:
        """A copy with every host tensor in pinned memory (for asynchronous copies to a GPU)."""
        return self._map(lambda v: v.pin_memory() if isinstance(v, (Tensor, _Transferable)) else v)

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Mark every tensor as used by ``stream`` (after a hand-over between CUDA streams)."""
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, (Tensor, _Transferable)):
                value.record_stream(stream)


def map_tensors(value: Any, fn: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor in it: a tensor, or a batch container with nested ones.

    Containers are rebuilt (new objects); plain values are kept. The order in which ``fn`` sees the
    tensors is the order of :func:`tensors_of`.
    """
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, _Transferable):
        return type(value)(**{f.name: map_tensors(getattr(value, f.name), fn) for f in fields(value)})  # type: ignore[arg-type]
    return value


def tensors_of(value: Any) -> list[Tensor]:
    """Every tensor in ``value`` (a tensor or a batch container), depth first in field order."""
    found: list[Tensor] = []
    map_tensors(value, lambda t: found.append(t) or t)
    return found


def with_tensors(value: Any, tensors: list[Tensor]) -> Any:
    """``value`` with its tensors replaced by ``tensors``, given in :func:`tensors_of` order.

    Raises:
        ValueError: ``tensors`` has another length than :func:`tensors_of` ``(value)``.
    """
    held = len(tensors_of(value))
    if len(tensors) != held:
        raise ValueError(f"with_tensors: {len(tensors)} tensors for a value holding {held}.")
    replacements = iter(tensors)
    return map_tensors(value, lambda _: next(replacements))


@dataclass
class NeighborBlock(_Transferable):
    """Temporal neighbours of ``R`` root nodes, ``K`` slots each (``mask`` False = padding).

    Shapes:
        - nodes: ``[R, K]`` int64 (0 in padded slots)
        - eids: ``[R, K]`` int64 event index of each neighbour's interaction (0 in padded slots)
        - times: ``[R, K]`` float64 time of that interaction (0 in padded slots)
        - mask: ``[R, K]`` bool
    """

    nodes: Tensor
    eids: Tensor
    times: Tensor
    mask: Tensor

    @property
    def num_roots(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def k(self) -> int:
        return int(self.nodes.shape[1])


@dataclass
class TemporalBatch(_Transferable):
    """One chronological batch of ``B`` positive events with ``Q`` negatives per event.

    The roots of neighbour sampling are ``cat([src, dst, neg_dst.T.flatten()])``: all sources,
    then all destinations, then the first negative of every event, the second, and so on
    (``R = B · (2 + Q)``); :meth:`roots` and :meth:`root_times` build them.

    Args:
        index: Position of the batch in its epoch (0-based), used as the pipeline's ticket.
        eids: Event index of each positive event in the full stream.
        src, dst: Endpoints of each positive event.
        neg_dst: Negative destinations.
        t: Event times.
        edge_feat: Features of each event (stage 2), or ``None``.
        neighbors: Temporal neighbours of the roots (stage 1), or ``None``.
        nbr_edge_feat: Features of each neighbour's interaction (stage 2), or ``None``.
        new_node: Whether each event touches a node unseen in training (inductive evaluation).
        memory: Memory snapshot of the batch's unique nodes (stage 3), or ``None`` until fetched.
        memory_index: Row of ``memory`` for each root, then each neighbour slot (stage 3).
        neg_mask: Which negatives are real where events have fewer than ``Q`` (TGB's evaluation
            negatives); a padded slot holds the event's own destination and never counts in a
            metric. ``None``: all are real.
        global_size: Events of the global batch this batch is one rank's slice of (several ranks;
            the loss scales by ``size / global_size``), or ``None``: the batch is the global batch.
        ready_event: On a GPU, the event after which the batch's device tensors are complete (the
            pipeline's fetcher records it on its stream; the training stream waits on it), or ``None``.

    Shapes:
        - eids, src, dst: ``[B]`` int64; t: ``[B]`` float64
        - neg_dst: ``[B, Q]`` int64; neg_mask: ``[B, Q]`` bool
        - edge_feat: ``[B, D_e]``; nbr_edge_feat: ``[R, K, D_e]``
        - new_node: ``[B]`` bool
        - memory_index: ``[R + R·K]`` int64 into the snapshot's ``U`` rows
    """

    index: int
    eids: Tensor
    src: Tensor
    dst: Tensor
    neg_dst: Tensor
    t: Tensor
    edge_feat: Tensor | None = None
    neighbors: NeighborBlock | None = None
    nbr_edge_feat: Tensor | None = None
    new_node: Tensor | None = None
    memory: Any = None
    memory_index: Tensor | None = None
    neg_mask: Tensor | None = None
    global_size: int | None = None
    ready_event: Any = None

    @property
    def size(self) -> int:
        """Number of positive events ``B``."""
        return int(self.src.numel())

    @property
    def num_negatives(self) -> int:
        """Negatives per positive ``Q``."""
        return int(self.neg_dst.shape[1])

    def roots(self) -> Tensor:
        """Root nodes ``[R]``: sources, destinations, then negatives (negative-major)."""
        return torch.cat([self.src, self.dst, self.neg_dst.t().reshape(-1)])

    def root_times(self) -> Tensor:
        """Time of each root ``[R]`` (a negative takes its positive event's time)."""
        return self.t.repeat(2 + self.num_negatives)

    def __len__(self) -> int:
        return self.size
