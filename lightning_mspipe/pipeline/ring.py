"""A ring of reusable slots (pinned host buffers), each reused only after the device is done with it.

The fetcher stages each batch in a pinned host slot and copies it to the device asynchronously;
the writer stages each write coming back. A slot may be written again only once the copy that
reads it (or writes it) has completed on the device, which the copy's event tells. The ring
holds the bookkeeping alone: what a slot is and what an event is stay abstract
(:class:`CompletionEvent`: ``torch.cuda.Event`` on a GPU, a stand-in in tests).

Slots are handed out in turn (a slot still held by a thread that never gave it back, such as
one left stuck in a call that cannot be interrupted, is skipped); :meth:`SlotRing.acquire` waits
(with a timeout) until the slot's event has completed, so a slot is never handed out while its
event is pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from lightning_mspipe.pipeline.errors import PipelineTimeout

__all__ = ["CompletionEvent", "SlotRing"]

T = TypeVar("T")

SPIN = 1e-4  # seconds between checks of a pending slot's event (copies take milliseconds)


class CompletionEvent(Protocol):
    """The one thing the ring asks of an event: whether the work recorded before it has completed."""

    def query(self) -> bool:
        """Whether the event has completed (non-blocking)."""


class SlotRing(Generic[T]):
    """``len(slots)`` slots handed out in turn, each reused only after the event of its last use completed.

    Args:
        slots: The slots (for example pinned host buffers).
        bound: The staleness bound ``s``; the ring needs at least ``s + 2`` slots (one per batch
            that can be in flight between the fetch and the step, and one being filled).
        timeout: Seconds :meth:`acquire` waits for a slot before it raises :class:`PipelineTimeout`.
        name: What the slots hold, for messages.

    Raises:
        ValueError: fewer than ``bound + 2`` slots.
    """

    def __init__(self, slots: list[T], bound: int, timeout: float, name: str = "pinned slots") -> None:
        if len(slots) < bound + 2:
            raise ValueError(
                f"SlotRing ({name}): {len(slots)} slots for max_staleness={bound}; the ring needs at least "
                f"s + 2 = {bound + 2} (one per batch that can be in flight, and one being filled)."
            )
        self.slots, self.timeout, self.name = slots, timeout, name
        self._events: list[CompletionEvent | None] = [None] * len(slots)
        self._held = [False] * len(slots)
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.slots)

    def acquire(self, should_stop: Callable[[], None] = lambda: None) -> tuple[int, T]:
        """The next slot in turn, once the event of its last use has completed.

        Args:
            should_stop: Called while waiting; may raise (a lane asked to stop).

        Returns:
            ``(slot id, slot)``; give it back with :meth:`release`.

        Raises:
            PipelineTimeout: The slot's event did not complete within ``timeout`` seconds.
            RuntimeError: Every slot is held (acquired and not released).
        """
        with self._lock:
            free = [i % len(self.slots) for i in range(self._next, self._next + len(self.slots))
                    if not self._held[i % len(self.slots)]]
            if not free:
                raise RuntimeError(f"SlotRing ({self.name}): all {len(self.slots)} slots are held; none was released.")
            slot = free[0]
            self._held[slot] = True
            self._next = (slot + 1) % len(self.slots)
            event = self._events[slot]
        deadline = time.monotonic() + self.timeout
        try:
            while event is not None and not event.query():
                should_stop()
                if time.monotonic() > deadline:
                    raise PipelineTimeout(
                        f"MSPipe pipeline: waited {self.timeout:g}s for {self.name} slot {slot} (of {len(self.slots)}) "
                        "to be free: the device copy that used it last has not completed."
                    )
                time.sleep(SPIN)
        except BaseException:
            with self._lock:
                self._held[slot] = False
            raise
        return slot, self.slots[slot]

    def release(self, slot: int, event: CompletionEvent | None) -> None:
        """Give ``slot`` back; it is handed out again only once ``event`` completed (``None``: at once)."""
        with self._lock:
            if not self._held[slot]:
                raise RuntimeError(f"SlotRing ({self.name}): slot {slot} is released but was not acquired.")
            self._held[slot] = False
            self._events[slot] = event

    def pending(self) -> int:
        """Slots whose last event has not completed yet (for statistics and tests)."""
        with self._lock:
            events = list(self._events)
        return sum(event is not None and not event.query() for event in events)
