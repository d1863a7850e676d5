"""Device → host copies of memory writes for a store kept in host memory (stage 5's side of the link).

A write computed on the GPU is copied into a pinned slot of a ring
(:class:`~lightning_mspipe.pipeline.ring.SlotRing`) with asynchronous copies on the writer's
stream; the writer thread then waits for that copy's own event (not for the stream) and
scatters the host copy into the store. The slot is given back after the scatter, with the
copy's (completed) event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from lightning_mspipe.data.batch import tensors_of, with_tensors
from lightning_mspipe.memory.ordering import CudaStreams, StreamEvents
from lightning_mspipe.memory.store import MemoryWrite
from lightning_mspipe.pipeline.ring import SlotRing
from lightning_mspipe.pipeline.staging import Arena, plan, views

__all__ = ["WriteBack", "make_write_back"]


class WriteBack:
    """Copies GPU writes to pinned host slots for a host-memory store.

    Args:
        ring: Pinned staging buffers (``≥ s + 2``).
        streams: The stream operations (:class:`~lightning_mspipe.memory.ordering.CudaStreams` on a GPU).
    """

    def __init__(self, ring: SlotRing[Arena], streams: StreamEvents) -> None:
        self.ring, self.streams = ring, streams

    @contextmanager
    def to_host(self, write: MemoryWrite, should_stop: Callable[[], None]) -> Iterator[MemoryWrite]:
        """The write, copied to a pinned slot (the copy complete); the slot is held until the block ends.

        Shapes:
            - as ``write`` (:class:`~lightning_mspipe.memory.store.MemoryWrite`), on the host
        """
        slot, arena = self.ring.acquire(should_stop)
        done = None
        try:
            tensors = tensors_of(write)
            slices, end = plan(tensors)
            host = views(arena.reserve(end), slices)
            for target, source in zip(host, tensors, strict=True):
                target.copy_(source, non_blocking=True)
            done = self.streams.record()
            done.synchronize()  # this write's copies, not the whole stream
            yield with_tensors(write, host)
        finally:
            self.ring.release(slot, done if done is not None else self.streams.record())


def make_write_back(device: torch.device, bound: int, timeout: float) -> WriteBack | None:
    """A :class:`WriteBack` with ``bound + 2`` pinned slots on a GPU; ``None`` on a CPU (nothing crosses a link)."""
    if device.type != "cuda":
        return None
    slots = [Arena(pin=True) for _ in range(bound + 2)]
    return WriteBack(SlotRing(slots, bound, timeout, name="pinned write-back"), CudaStreams(device))
