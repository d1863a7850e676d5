"""Per-stage timings and the staleness histogram of a pipelined epoch.

On a CPU a stage's time is a host clock's. On a GPU the host only launches most of a stage's
work, so a :class:`StageTimer` with a device event source also records an event on the current
stream at the start and at the end of the stage, and the stage's time is the device time
between them (``elapsed_time``), taken once the end event has completed: the profile keeps the
pending pairs and resolves them whenever it is read or written, never blocking. The host times
still feed the timeline picture.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lightning_mspipe.pipeline.schedule import StageTimes
from lightning_mspipe.pipeline.timeline import TimelineRecorder

__all__ = ["STAGES", "PipelineProfile", "StageSpan", "StageTimer", "TimingEvent", "cuda_timing_events"]

STAGES = ("sample", "features", "memory", "train", "write")


class PipelineProfile:
    """Bounded windows of stage times (seconds), consumer waits and a staleness histogram.

    Host clocks measure each stage on a CPU; on CUDA, device events (:meth:`record_events`,
    see the module docstring). Thread-safe: the sampler lane records
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
        self._pending: list[tuple[str, TimingEvent, TimingEvent, float]] = []
        self.timeline: TimelineRecorder | None = None

    def record(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._resolve()
            self._times[stage].append(seconds)

    def record_events(self, stage: str, index: int, start: TimingEvent, end: TimingEvent, host_start: float,
                      host_end: float, minus: float = 0.0) -> None:
        """Record ``stage`` of batch ``index`` as the device time from ``start`` to ``end`` less ``minus`` seconds,
        once ``end`` has completed; the host span goes to the timeline now."""
        timeline = self.timeline
        if timeline is not None:
            timeline.add(stage, index, host_start, host_end)
        with self._lock:
            self._pending.append((stage, start, end, minus))
            self._resolve()

    def _resolve(self) -> None:
        """Move the completed event pairs into the windows (call under the lock; never blocks)."""
        waiting = []
        for stage, start, end, minus in self._pending:
            if end.query():
                self._times[stage].append(max(start.elapsed_time(end) / 1e3 - minus, 0.0))
            else:
                waiting.append((stage, start, end, minus))
        self._pending = waiting

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
            self._resolve()
            return len(self._times[stage])

    def mean(self, stage: str, last: int | None = None) -> float:
        """Mean seconds of ``stage`` over the window, or over its ``last`` entries only."""
        with self._lock:
            self._resolve()
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


class TimingEvent(Protocol):
    """A device event that measures time (``torch.cuda.Event(enable_timing=True)``, a stand-in in tests)."""

    def query(self) -> bool:
        """Whether the event has completed."""

    def elapsed_time(self, end: Any) -> float:
        """Milliseconds from this event to ``end`` (both completed)."""


def cuda_timing_events(device: torch.device) -> Callable[[], torch.cuda.Event]:
    """A source of timing events recorded on the current CUDA stream of ``device``."""

    def record() -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(device))
        return event

    return record


@dataclass
class StageSpan:
    """A started stage: its host start and, on a GPU, its start event."""

    stage: str
    index: int
    host_start: float
    start_event: TimingEvent | None


class StageTimer:
    """Times stages into a profile: by the host clock, or (given ``events``) by device events on the current stream.

    Args:
        profile: Where the times go.
        events: Records a timing event on the current stream and returns it (:func:`cuda_timing_events`),
            or ``None`` for the host clock.
    """

    def __init__(self, profile: PipelineProfile, events: Callable[[], TimingEvent] | None = None) -> None:
        self.profile, self.events = profile, events

    def start(self, stage: str, index: int) -> StageSpan:
        """Start ``stage`` of batch ``index`` now."""
        return StageSpan(stage, index, time.perf_counter(), None if self.events is None else self.events())

    def stop(self, span: StageSpan, minus: float = 0.0) -> None:
        """End ``span`` now; its time leaves out ``minus`` seconds (a wait inside it that belongs to another stage)."""
        host_end = time.perf_counter()
        if span.start_event is None or self.events is None:
            self.profile.record_span(span.stage, span.index, span.host_start, max(host_end - minus, span.host_start))
        else:
            self.profile.record_events(span.stage, span.index, span.start_event, self.events(), span.host_start,
                                       host_end, minus)

    @contextmanager
    def span(self, stage: str, index: int) -> Iterator[StageSpan]:
        """Time the block as ``stage`` of batch ``index`` (only when it completes without an exception)."""
        started = self.start(stage, index)
        yield started
        self.stop(started)
