"""Per-batch stage spans on the host clock: the data behind a timeline picture of the pipeline.

A :class:`TimelineRecorder` is off unless a :class:`~lightning_mspipe.pipeline.profile.PipelineProfile`
holds one (``profile.timeline``); then every stage of the batches in its window adds one
:class:`StageSpan`. The gaps between the spans of the ``"train"`` lane are the pipeline's
bubbles: the time the training stage waited.
"""

from __future__ import annotations

import threading
from itertools import pairwise
from typing import NamedTuple

__all__ = ["StageSpan", "TimelineRecorder"]


class StageSpan(NamedTuple):
    """One stage of one batch: ``start`` and ``end`` in seconds of ``time.perf_counter()``."""

    stage: str
    index: int
    start: float
    end: float


class TimelineRecorder:
    """Collects the stage spans of batches ``first … first + batches − 1`` (of the first epoch that has them).

    Thread-safe: the sampler (stage 1), the fetcher (stages 2–3), the training thread (stage 4)
    and the writer (stage 5) add spans. A stage of a batch that is already recorded (a later epoch) is ignored,
    so the recorder holds at most ``5 · batches`` spans.

    Args:
        batches: Number of batches in the window.
        first: The first batch of the window (the first batches pay one-time costs).
    """

    def __init__(self, batches: int = 12, first: int = 2) -> None:
        if batches < 1 or first < 0:
            raise ValueError(f"TimelineRecorder: need batches ≥ 1 and first ≥ 0, got batches={batches}, first={first}.")
        self.batches, self.first = batches, first
        self._spans: dict[tuple[str, int], StageSpan] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, index: int, start: float, end: float) -> None:
        """Record ``stage`` of batch ``index`` from ``start`` to ``end`` if the batch is in the window."""
        if self.first <= index < self.first + self.batches:
            with self._lock:
                self._spans.setdefault((stage, index), StageSpan(stage, index, start, end))

    def spans(self, stage: str | None = None) -> list[StageSpan]:
        """The recorded spans (of one ``stage``, or all), by start time."""
        with self._lock:
            spans = list(self._spans.values())
        return sorted((s for s in spans if stage is None or s.stage == stage), key=lambda s: s.start)

    def busy(self, stage: str = "train") -> float:
        """Seconds the ``stage`` lane worked inside the window."""
        return sum(span.end - span.start for span in self.spans(stage))

    def idle(self, stage: str = "train") -> float:
        """Seconds the ``stage`` lane waited between its first and last span (the bubbles)."""
        spans = self.spans(stage)
        return sum(max(later.start - earlier.end, 0.0) for earlier, later in pairwise(spans))

    def idle_share(self, stage: str = "train") -> float:
        """``idle / (idle + busy)`` of the ``stage`` lane (0 without spans)."""
        idle, busy = self.idle(stage), self.busy(stage)
        return idle / (idle + busy) if idle + busy > 0 else 0.0
