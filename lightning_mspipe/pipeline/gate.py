"""The staleness gate: when the memory fetch (stage 3) of a batch may start, and when a write may commit.

- Every mode: the fetch of batch ``j`` waits until the memory version is ``≥ j − s``.
- ``bounded``: the fetch then waits for fresher memory, but no longer than its latest start
  that does not stall training (:func:`fetch_delay`).
- ``exact``: batch ``j`` reads exactly version ``max(0, j − s)``, because the write of batch
  ``i`` is held (:meth:`StalenessGate.hold_write`) until batch ``i + s`` has read memory.

Every wait of the gate is on one condition, which the store notifies at every change of its
version (:meth:`~lightning_mspipe.memory.store.MemoryStore.watch_version`) and the gate
itself at every hand-over (:meth:`StalenessGate.mark_taken`) and fetch: a waiting fetch wakes
at once, whichever of them it waits for. Between wake-ups a wait re-checks its stop flag and
its timeout every ``poll`` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemoryStore
from lightning_mspipe.pipeline.errors import PipelineTimeout
from lightning_mspipe.pipeline.lanes import POLL, LaneRun
from lightning_mspipe.pipeline.schedule import StageTimes

__all__ = ["StalenessGate", "fetch_delay"]

SLACK = 0.1  # share of the training step kept as a safety margin before the latest start


def fetch_delay(times: StageTimes, slack: float = SLACK) -> float:
    """Seconds after batch ``j − 1`` is handed to training at which the fetch of batch ``j`` must start.

    Training asks for batch ``j`` once the step (τ4) of batch ``j − 1`` is done (its write, τ5, runs
    on the writer lane); the fetch takes τ3, so its latest start that does not stall training is
    ``τ4 − τ3``, less a safety margin of ``slack · τ4``.
    """
    return times.train - times.memory - slack * times.train


class StalenessGate:
    """The version gate between the fetcher lane (fetches) and the training thread (hand-overs, writes).

    It also keeps the batches fetched but not yet handed to training (checkpoints save the
    stale ones). Thread-safe.

    Args:
        store: The memory store whose version is gated on.
        bound: ``s``, the writes a fetch may miss (may change between segments: ``"auto"``).
        mode: ``"bounded"`` or ``"exact"``.
        timeout: Seconds any wait may last before it raises :class:`PipelineTimeout`.
        writer_state: Where the memory writer is, for the gate's timeout message.
        poll: Seconds between checks of a waiting lane's stop flag and of the timeout (wake-ups
            for a new version or a hand-over come at once, not at this interval).
    """

    def __init__(self, store: MemoryStore, bound: int, mode: str, timeout: float,
                 writer_state: Callable[[], str] = lambda: "no writer", poll: float = POLL) -> None:
        self.store, self.bound, self.mode, self.timeout = store, bound, mode, timeout
        self.writer_state, self.poll = writer_state, poll
        self._cv = threading.Condition()
        store.watch_version(self._cv)
        self.reset()

    # ------------------------------------------------------------------ bookkeeping
    def reset(self) -> None:
        """Forget the previous epoch's batches (at every epoch start)."""
        with self._cv:
            self._inflight: dict[int, TemporalBatch] = {}
            self._fetched_upto = -1
            self._taken_at: dict[int, float] = {}
            self._segment_end = 0
            self._fetcher_done = True

    def start_segment(self, end: int) -> None:
        """A fetcher starts; it will fetch batches up to ``end − 1``."""
        with self._cv:
            self._segment_end = end
            self._fetcher_done = False

    def end_segment(self) -> None:
        """The fetcher ended (finished, stopped or failed): nothing waits for its fetches any more."""
        with self._cv:
            self._fetcher_done = True
            self._cv.notify_all()

    def mark_fetched(self, batch: TemporalBatch) -> None:
        """Stage 3 of ``batch`` is done."""
        with self._cv:
            self._inflight[batch.index] = batch
            self._fetched_upto = max(self._fetched_upto, batch.index)
            self._cv.notify_all()

    def mark_taken(self, index: int, at: float) -> None:
        """Batch ``index`` was handed to training at ``at`` (``time.perf_counter()``); wakes a fetch waiting for it."""
        with self._cv:
            self._taken_at[index] = at
            self._inflight.pop(index, None)
            self._cv.notify_all()

    def inflight(self) -> list[TemporalBatch]:
        """Batches fetched but not yet handed to training."""
        with self._cv:
            return list(self._inflight.values())

    # ------------------------------------------------------------------ fetch side (fetcher lane)
    def wait_to_fetch(self, index: int, run: LaneRun, times: Callable[[], StageTimes]) -> None:
        """Block the fetch of batch ``index`` until the gate opens (and, bounded, until its latest start).

        Bounded mode, after the gate: wait until memory is fully fresh (version ``index``) or until
        the latest start, :func:`fetch_delay` after batch ``index − 1`` was handed to training,
        whichever comes first. Both events wake the wait at once.

        Raises:
            PipelineTimeout: The version gate stayed closed for ``timeout`` seconds.
            Stopped: The lane was asked to stop.
        """
        run.enter("wait for memory", index)
        needed = max(0, index - self.bound)
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while self.store.current_version < needed:
                run.raise_if_stopped()
                if time.monotonic() > deadline:
                    raise PipelineTimeout(
                        f"MSPipe pipeline: batch {index} waited {self.timeout:g}s at the staleness gate for memory "
                        f"version {needed} (it is {self.store.current_version}; {self.writer_state()}). Memory writes "
                        "have stopped: does the model hand its writes to this pipeline (MSPipeStrategy attaches it "
                        "with `use_memory_writer`), and is training still running?"
                    )
                self._cv.wait(self.poll)
            if self.mode == "exact" or self.bound == 0:
                return
            latest = None  # the latest start, once batch index − 1 is handed over
            while self.store.current_version < index:  # not yet fully fresh
                run.raise_if_stopped()
                if latest is None and (taken := self._taken_at.get(index - 1)) is not None:
                    latest = taken + fetch_delay(times())
                now = time.perf_counter()
                if (latest is not None and now >= latest) or time.monotonic() > deadline:
                    return  # the gate is open: fetch rather than stall training (or wait past the timeout)
                self._cv.wait(self.poll if latest is None else min(self.poll, latest - now))

    # ------------------------------------------------------------------ write side (writer lane)
    def hold_write(self, index: int) -> None:
        """``exact`` mode: hold the write of batch ``index`` until batch ``index + s`` has read memory.

        Raises:
            PipelineTimeout: The fetcher did not reach that batch within ``timeout`` seconds.
        """
        if self.mode != "exact":
            return
        deadline = time.monotonic() + self.timeout
        with self._cv:
            needed = min(index + self.bound, self._segment_end - 1)
            while self._fetched_upto < needed and not self._fetcher_done:
                if time.monotonic() > deadline:
                    raise PipelineTimeout(
                        f"MSPipe pipeline (exact mode): the memory write of batch {index} waited {self.timeout:g}s "
                        f"for batch {needed} to read memory version {needed - self.bound}."
                    )
                self._cv.wait(self.poll)
