"""The staleness gate: when the memory fetch (stage 3) of a batch may start, and when a write may commit.

- Every mode: the fetch of batch ``j`` waits until the memory version is ``≥ j − s``.
- ``bounded``: the fetch then waits for fresher memory, but no longer than its latest start
  that does not stall training (:func:`fetch_delay`).
- ``exact``: batch ``j`` reads exactly version ``max(0, j − s)``, because the write of batch
  ``i`` is held (:meth:`StalenessGate.hold_write`) until batch ``i + s`` has read memory.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemoryStore
from lightning_mspipe.pipeline.errors import PipelineTimeout, Stopped
from lightning_mspipe.pipeline.lanes import POLL, LaneRun
from lightning_mspipe.pipeline.schedule import StageTimes

#: Seconds between checks for the previous batch's hand-over while a bounded fetch waits for it: the
#: hand-over (``mark_taken``) does not wake a wait on the store's version, and with the stop-flag
#: interval (``POLL``, 50 ms) the fetch started up to 50 ms late and training waited for it.
HANDOVER_POLL = 0.001

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
    """The version gate between the producer (fetches) and the training thread (hand-overs, writes).

    It also keeps the batches fetched but not yet handed to training (checkpoints save the
    stale ones). Thread-safe.

    Args:
        store: The memory store whose version is gated on.
        bound: ``s``, the writes a fetch may miss (may change between segments: ``"auto"``).
        mode: ``"bounded"`` or ``"exact"``.
        timeout: Seconds any wait may last before it raises :class:`PipelineTimeout`.
        writer_state: Where the memory writer is, for the gate's timeout message.
    """

    def __init__(self, store: MemoryStore, bound: int, mode: str, timeout: float,
                 writer_state: Callable[[], str] = lambda: "no writer") -> None:
        self.store, self.bound, self.mode, self.timeout = store, bound, mode, timeout
        self.writer_state = writer_state
        self._cv = threading.Condition()
        self.reset()

    # ------------------------------------------------------------------ bookkeeping
    def reset(self) -> None:
        """Forget the previous epoch's batches (at every epoch start)."""
        with self._cv:
            self._inflight: dict[int, TemporalBatch] = {}
            self._fetched_upto = -1
            self._taken_at: dict[int, float] = {}
            self._segment_end = 0
            self._producer_done = True

    def start_segment(self, end: int) -> None:
        """A producer starts; it will fetch batches up to ``end − 1``."""
        with self._cv:
            self._segment_end = end
            self._producer_done = False

    def end_segment(self) -> None:
        """The producer ended (finished, stopped or failed): nothing waits for its fetches any more."""
        with self._cv:
            self._producer_done = True
            self._cv.notify_all()

    def mark_fetched(self, batch: TemporalBatch) -> None:
        """Stage 3 of ``batch`` is done."""
        with self._cv:
            self._inflight[batch.index] = batch
            self._fetched_upto = max(self._fetched_upto, batch.index)
            self._cv.notify_all()

    def mark_taken(self, index: int, at: float) -> None:
        """Batch ``index`` was handed to training at ``at`` (``time.perf_counter()``)."""
        with self._cv:
            self._taken_at[index] = at
            self._inflight.pop(index, None)
            self._cv.notify_all()

    def inflight(self) -> list[TemporalBatch]:
        """Batches fetched but not yet handed to training."""
        with self._cv:
            return list(self._inflight.values())

    # ------------------------------------------------------------------ fetch side (producer)
    def wait_to_fetch(self, index: int, run: LaneRun, times: Callable[[], StageTimes]) -> None:
        """Block the fetch of batch ``index`` until the gate opens (and, bounded, until its latest start).

        Raises:
            PipelineTimeout: The version gate stayed closed for ``timeout`` seconds.
            Stopped: The lane was asked to stop.
        """
        run.enter("wait for memory", index)
        self._wait_version(max(0, index - self.bound), index, run)
        if self.mode == "exact" or self.bound == 0:
            return
        deadline = None
        started = time.monotonic()
        while self.store.current_version < index:  # not yet fully fresh
            if run.stop.is_set():
                raise Stopped
            with self._cv:
                taken = self._taken_at.get(index - 1)
            if taken is not None and deadline is None:
                deadline = taken + fetch_delay(times())
            if deadline is not None and time.perf_counter() >= deadline:
                return
            wait = HANDOVER_POLL if deadline is None else min(POLL, max(deadline - time.perf_counter(), 0.0))
            self.store.wait_for_version(index, timeout=max(wait, 1e-4))
            if time.monotonic() - started > self.timeout:
                return  # the gate is already satisfied; fetch rather than wait any longer

    def _wait_version(self, version: int, index: int, run: LaneRun) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.store.wait_for_version(version, timeout=POLL):
            if run.stop.is_set():
                raise Stopped
            if time.monotonic() > deadline:
                raise PipelineTimeout(
                    f"MSPipe pipeline: batch {index} waited {self.timeout:g}s at the staleness gate for memory "
                    f"version {version} (it is {self.store.current_version}; {self.writer_state()}). Memory writes "
                    "have stopped: does the model hand its writes to this pipeline (MSPipeStrategy attaches it with "
                    "`use_memory_writer`), and is training still running?"
                )

    # ------------------------------------------------------------------ write side (training thread)
    def hold_write(self, index: int) -> None:
        """``exact`` mode: hold the write of batch ``index`` until batch ``index + s`` has read memory.

        Raises:
            PipelineTimeout: The producer did not reach that batch within ``timeout`` seconds.
        """
        if self.mode != "exact":
            return
        needed = min(index + self.bound, self._segment_end - 1)
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while self._fetched_upto < needed and not self._producer_done:
                if time.monotonic() > deadline:
                    raise PipelineTimeout(
                        f"MSPipe pipeline (exact mode): the memory write of batch {index} waited {self.timeout:g}s "
                        f"for batch {needed} to read memory version {needed - self.bound}."
                    )
                self._cv.wait(timeout=POLL)
