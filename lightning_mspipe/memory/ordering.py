"""Ordering a GPU memory store's reads and writes across CUDA streams with events, without host syncs.

The store is read (gathered) on the fetcher's stream and on the training stream, and written on
the writer's stream or the training stream. The store's host lock orders the *launches*; the
kernels of different streams still run in any order. :class:`StreamOrder` adds the device-side
order the launches promise:

- a read waits for the last write (read after write);
- a write waits for every read launched since the write before it (write after read: a
  gather enqueued behind a slow copy must not see a later write), and for that write.

Each side records an event on its own stream after it launches its kernels; the other side's
stream waits on it (``wait_event``), so the host never blocks. A write's event also serves the
writer lane to tell when the write is complete. On a CPU store every method does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

__all__ = ["CudaStreams", "StreamEvents", "StreamOrder"]


class StreamEvents(Protocol):
    """The stream operations the ordering needs (CUDA's in :class:`CudaStreams`, stand-ins in tests)."""

    def record(self) -> Any:
        """An event recorded on the current stream."""

    def wait(self, event: Any) -> None:
        """Make the current stream wait for ``event`` (device-side)."""

    def stream_key(self) -> Any:
        """A hashable key of the current stream."""


class CudaStreams:
    """:class:`StreamEvents` on the current CUDA stream of ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def record(self) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def wait(self, event: torch.cuda.Event) -> None:
        torch.cuda.current_stream(self.device).wait_event(event)

    def stream_key(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream


class StreamOrder:
    """The events between a store's reads and writes on different streams. Call it under the store's lock.

    Args:
        events: Returns the stream operations for the store's device now, or ``None`` when the
            store is not on a CUDA device (then nothing is recorded or waited for).
    """

    def __init__(self, events: Callable[[], StreamEvents | None]) -> None:
        self.events = events
        self.last_write: Any = None
        self._reads: dict[Any, Any] = {}  # stream → event of its last read since the last write

    def before_read(self) -> None:
        """The current stream waits for the last write."""
        events = self.events()
        if events is not None and self.last_write is not None:
            events.wait(self.last_write)

    def after_read(self) -> None:
        """Record that the current stream has launched a read."""
        events = self.events()
        if events is not None:
            self._reads[events.stream_key()] = events.record()

    def before_write(self) -> None:
        """The current stream waits for every read since the last write, and for that write."""
        events = self.events()
        if events is None:
            return
        for event in self._reads.values():
            events.wait(event)
        if self.last_write is not None:
            events.wait(self.last_write)

    def after_write(self) -> Any:
        """Record that the current stream has launched a write; return its event (``None`` on a CPU store).

        The reads before it are covered from now on: a later write waits for this one, which came after them.
        """
        events = self.events()
        if events is None:
            return None
        self.last_write = events.record()
        self._reads.clear()
        return self.last_write
