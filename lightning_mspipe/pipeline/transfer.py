"""The host → device side of stages 2 and 3, and the hand-over of a fetched batch to the training stream.

:class:`HostTransfer` serves a CPU compute device: the batch stays where it is and stage 3 is
:func:`~lightning_mspipe.pipeline.stages.fetch_memory`, as in the plain training step.

:class:`CudaTransfer` serves a GPU, without host synchronisations:

- stage 2 packs the batch's host tensors into a pinned slot of a ring
  (:class:`~lightning_mspipe.pipeline.ring.SlotRing` of :class:`StagingSlot`, at least ``s + 2``
  slots) and copies it to the device in one asynchronous copy on the current (fetcher) stream;
- stage 3 deduplicates the batch's nodes on the host (no ``unique()`` on the device, which would
  sync), then either gathers the memory rows on the host straight into the slot and copies them
  over (store in host memory), or copies the node ids over and gathers on the device, where the
  store's :class:`~lightning_mspipe.memory.ordering.StreamOrder` makes the gather wait for the
  last write's event (store on the GPU);
- an event recorded after both stages (``batch.ready_event``) releases the slot (it is reused
  only once the event has completed) and is what the training stream waits on at the hand-over
  (``wait_event``, not ``wait_stream``: later batches' copies on the fetcher stream do not
  delay it), with ``record_stream`` on every tensor of the batch.

The CUDA calls go through :class:`TransferStreams`, so the CPU tests drive :class:`CudaTransfer`
with stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from lightning_mspipe.data.batch import TemporalBatch, tensors_of, with_tensors
from lightning_mspipe.memory.ordering import CudaStreams, StreamEvents
from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore
from lightning_mspipe.pipeline.ring import SlotRing
from lightning_mspipe.pipeline.stages import fetch_memory
from lightning_mspipe.pipeline.staging import Arena, pack, plan, views

__all__ = ["BatchTransfer", "CudaTransfer", "HostTransfer", "Staged", "StagingSlot", "TransferStreams",
           "gathers_on_device", "make_transfer"]

Restored = tuple[MemorySnapshot, Tensor]  # a checkpoint's snapshot of an in-flight batch and its memory_index


class TransferStreams(StreamEvents, Protocol):
    """:class:`~lightning_mspipe.memory.ordering.StreamEvents`, plus marking tensors as used by the current stream."""

    def record_stream(self, batch: TemporalBatch) -> None:
        """``record_stream(current stream)`` on every tensor of ``batch``."""


class CudaTransferStreams(CudaStreams):
    """:class:`TransferStreams` on the current CUDA stream of ``device``."""

    def record_stream(self, batch: TemporalBatch) -> None:
        batch.record_stream(torch.cuda.current_stream(self.device))


@dataclass
class StagingSlot:
    """One slot of the staging ring: pinned host room for a batch's features and for its memory rows."""

    features: Arena
    memory: Arena


@dataclass
class Staged:
    """A batch between stage 2 and stage 3.

    Shapes:
        - nodes: ``[R + R·K]`` int64 on the host: roots, then neighbour slots (``None`` for :class:`HostTransfer`)
    """

    batch: TemporalBatch
    nodes: Tensor | None = None
    slot: int | None = None  # the ring slot held until stage 3 ends


class BatchTransfer(Protocol):
    """What the pipeline asks of a transfer (:class:`HostTransfer`, :class:`CudaTransfer`)."""

    def features(self, batch: TemporalBatch, should_stop: Callable[[], None]) -> Staged:
        """Stage 2's move of a batch (its features fetched on the host) towards the compute device."""

    def memory(self, staged: Staged, store: MemoryStore, restored: Restored | None) -> TemporalBatch:
        """Stage 3: the batch with its memory snapshot (or the ``restored`` one)."""

    def abandon(self, staged: Staged) -> None:
        """Release what :meth:`features` holds when :meth:`memory` will not run."""

    def hand_over(self, batch: TemporalBatch) -> TemporalBatch:
        """Make a fetched batch safe to use on the current (training) stream."""

    def settle(self, batch: TemporalBatch) -> None:
        """Block the host until the batch's tensors are complete."""


def gathers_on_device(store: MemoryStore, device: torch.device) -> bool:
    """Whether stage 3 gathers on the compute device (the store is on a GPU: the compute device's) or on the
    host (the store is in host memory, pinned or not)."""
    return store.device.type != "cpu"


def _batch_nodes(batch: TemporalBatch) -> Tensor:
    """The batch's nodes in :func:`~lightning_mspipe.pipeline.stages.fetch_memory`'s order: roots, then neighbour slots."""
    if batch.neighbors is None:
        raise ValueError(f"fetch_memory: batch {batch.index} has no sampled neighbours (run stage 1 first).")
    return torch.cat([batch.roots(), batch.neighbors.nodes.reshape(-1)])


class HostTransfer:
    """Stages 2 and 3 for a CPU compute device: nothing moves, stage 3 is the plain step's ``fetch_memory``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def features(self, batch: TemporalBatch, should_stop: Callable[[], None]) -> Staged:
        return Staged(batch)

    def memory(self, staged: Staged, store: MemoryStore, restored: Restored | None) -> TemporalBatch:
        batch = staged.batch
        if restored is not None:
            batch.memory, batch.memory_index = restored
            return batch
        return fetch_memory(store, batch, self.device)

    def abandon(self, staged: Staged) -> None:
        """Nothing is held between the stages."""

    def hand_over(self, batch: TemporalBatch) -> TemporalBatch:
        return batch

    def settle(self, batch: TemporalBatch) -> None:
        """The batch's tensors are complete (no device copies)."""


class CudaTransfer:
    """Stages 2 and 3 to a GPU through a ring of pinned slots, ordered by events (see the module docstring).

    Args:
        device: The compute device.
        ring: The staging slots (at least ``s + 2``).
        streams: The stream operations (:class:`CudaTransferStreams` on a GPU).
    """

    def __init__(self, device: torch.device, ring: SlotRing[StagingSlot], streams: TransferStreams) -> None:
        self.device, self.ring, self.streams = device, ring, streams

    # ------------------------------------------------------------------ stage 2
    def features(self, batch: TemporalBatch, should_stop: Callable[[], None]) -> Staged:
        """Copy the batch's host tensors to the device in one asynchronous copy from a pinned slot.

        The slot stays held until :meth:`memory` (or :meth:`abandon`) gives it back.
        """
        nodes = _batch_nodes(batch)
        slot, room = self.ring.acquire(should_stop)
        try:
            on_device = with_tensors(batch, self._copy(tensors_of(batch), room.features))
        except BaseException:
            self.ring.release(slot, self.streams.record())
            raise
        return Staged(on_device, nodes, slot)

    def _copy(self, tensors: list[Tensor], arena: Arena, host: Callable[[list[Tensor]], None] | None = None) -> list[Tensor]:
        """Stage ``tensors`` in ``arena`` and copy them to the device; return device views in the same order.

        ``host`` fills the staged views itself (a gather straight into the slot); by default they
        are packed from ``tensors``.
        """
        slices, end = plan(tensors)
        buffer = arena.reserve(end)
        if host is None:
            pack(tensors, slices, buffer)
        else:
            host(views(buffer, slices))
        device_buffer = torch.empty(end, dtype=torch.uint8, device=self.device)
        device_buffer.copy_(buffer[:end], non_blocking=True)
        return views(device_buffer, slices)

    # ------------------------------------------------------------------ stage 3
    def memory(self, staged: Staged, store: MemoryStore, restored: Restored | None) -> TemporalBatch:
        """Gather the batch's memory (see the module docstring), record ``batch.ready_event`` and give the slot back."""
        assert staged.slot is not None and staged.nodes is not None, "memory() without features()"
        batch, ready = staged.batch, None
        try:
            if restored is not None:
                batch.memory, batch.memory_index = restored
            else:
                unique, inverse = torch.unique(staged.nodes, return_inverse=True)  # on the host: no device sync
                room = self.ring.slots[staged.slot].memory
                if gathers_on_device(store, self.device):
                    unique, batch.memory_index = self._copy([unique, inverse], room)
                    batch.memory = store.gather(unique)  # waits (device-side) for the last write
                else:
                    batch.memory, batch.memory_index = self._gather_on_host(store, unique, inverse, room)
            ready = self.streams.record()
            batch.ready_event = ready
        finally:
            self.ring.release(staged.slot, ready if ready is not None else self.streams.record())
            staged.slot = None
        return batch

    def _gather_on_host(self, store: MemoryStore, unique: Tensor, inverse: Tensor, room: Arena) -> Restored:
        """Gather the rows of ``unique`` from a host store straight into the slot; copy them and ``inverse`` over."""
        count, mailbox = unique.numel(), store.mailbox_size
        meta = lambda shape, dtype: torch.empty(shape, dtype=dtype, device="meta")  # noqa: E731 - layout only
        layout = [meta((count,), torch.int64), meta((count, store.memory_dim), store.memory.dtype),
                  meta((count,), store.last_update.dtype), meta((count, mailbox, store.mail_dim), store.mailbox.dtype),
                  meta((count, mailbox), store.mail_ts.dtype), meta((count, mailbox), torch.bool),
                  meta(tuple(inverse.shape), torch.int64)]
        seen: list[int] = []

        def gather_into(host: list[Tensor]) -> None:
            snapshot = store.gather(unique, out=MemorySnapshot(*host[:6], version=-1))
            seen.append(snapshot.version)
            host[6].copy_(inverse)

        device = self._copy(layout, room, host=gather_into)
        return MemorySnapshot(*device[:6], version=seen[0]), device[6]

    def abandon(self, staged: Staged) -> None:
        """Give the slot back when stage 3 does not run (the lane stopped or failed in between)."""
        if staged.slot is not None:
            self.ring.release(staged.slot, self.streams.record())
            staged.slot = None

    # ------------------------------------------------------------------ training thread
    def hand_over(self, batch: TemporalBatch) -> TemporalBatch:
        """The current (training) stream waits for the batch's event; its tensors are marked as used by it."""
        if batch.ready_event is not None:
            self.streams.wait(batch.ready_event)
            self.streams.record_stream(batch)
        return batch

    def settle(self, batch: TemporalBatch) -> None:
        """Block the host until the batch's tensors are complete (before reading them on the host: checkpoints)."""
        if batch.ready_event is not None:
            batch.ready_event.synchronize()


def make_transfer(device: torch.device, bound: int, timeout: float) -> BatchTransfer:
    """The transfer for ``device``: :class:`HostTransfer` on a CPU; on a GPU a :class:`CudaTransfer` with a
    ring of ``bound + 2`` pinned slots (``bound``: the largest ``s`` the pipeline may use). Each slot's
    buffers are allocated at their first use and grow to the largest batch."""
    if device.type != "cuda":
        return HostTransfer(device)
    slots = [StagingSlot(Arena(pin=True), Arena(pin=True)) for _ in range(bound + 2)]
    return CudaTransfer(device, SlotRing(slots, bound, timeout, name="pinned staging"), CudaTransferStreams(device))
