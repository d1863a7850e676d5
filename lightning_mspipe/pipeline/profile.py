"""Per-stage timings and the staleness histogram of a pipelined epoch."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from lightning_mspipe.pipeline.schedule import StageTimes
from lightning_mspipe.pipeline.timeline import TimelineRecorder

__all__ = ["PipelineProfile", "STAGES"]

STAGES = ("sample", "features", "memory", "train", "write")


class PipelineProfile:
    """Bounded windows of stage times (seconds), consumer waits and a staleness histogram.

    Host clocks measure each stage; on CUDA the stages synchronise their own stream before
    the clock stops, so the times include the device work. Thread-safe: the sampler lane records
    stage 1, the fetcher lane stages 2–3, the training thread stage 4 and the waits, the writer
    lane stage 5.

    ``timeline``: a :class:`~lightning_mspipe.pipeline.timeline.TimelineRecorder` that also
    receives each stage's start and end (``PipelineTimeline`` sets it), or ``None`` (off).

    Args:
        window: Number of recent batches each mean is taken over.
    """

    def __init__(self, window: int = 50) -> None:
        self.window = window
        self._times = {stage: deque(maxlen=window) for stage in STAGES}
        self._waits: deque[float] = deque(maxlen=window)
        self.staleness = Counter()
        self.total_wait = 0.0
        self.batches = 0
        self._lock = threading.Lock()
        self.timeline: TimelineRecorder | None = None

    def record(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._times[stage].append(seconds)

    def record_span(self, stage: str, index: int, start: float, end: float) -> None:
        """Record ``stage`` of batch ``index`` from ``start`` to ``end`` (``time.perf_counter()``), also in the timeline."""
        self.record(stage, end - start)
        timeline = self.timeline
        if timeline is not None:
            timeline.add(stage, index, start, end)

    def record_wait(self, seconds: float) -> None:
        """Time the training stage spent waiting for its next batch (a pipeline bubble)."""
        with self._lock:
            self._waits.append(seconds)
            self.total_wait += seconds

    def record_staleness(self, staleness: int) -> None:
        with self._lock:
            self.staleness[staleness] += 1
            self.batches += 1

    def count(self, stage: str) -> int:
        with self._lock:
            return len(self._times[stage])

    def mean(self, stage: str, last: int | None = None) -> float:
        """Mean seconds of ``stage`` over the window, or over its ``last`` entries only."""
        with self._lock:
            values = list(self._times[stage])
        if last is not None:
            values = values[-last:]
        return sum(values) / len(values) if values else 0.0

    def mean_wait(self) -> float:
        with self._lock:
            return sum(self._waits) / len(self._waits) if self._waits else 0.0

    def stage_times(self, last: int | None = None) -> StageTimes:
        """Mean times of the five stages (over each window's ``last`` entries if given)."""
        return StageTimes(*(self.mean(stage, last) for stage in STAGES))

    def max_staleness_seen(self) -> int:
        with self._lock:
            return max(self.staleness) if self.staleness else 0


class StageClock:
    """Context manager that records the elapsed time of one stage (of batch ``index``) into a profile."""

    __slots__ = ("index", "profile", "stage", "start")

    def __init__(self, profile: PipelineProfile, stage: str, index: int = -1) -> None:
        self.profile, self.stage, self.index = profile, stage, index

    def __enter__(self) -> "StageClock":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.profile.record_span(self.stage, self.index, self.start, time.perf_counter())
