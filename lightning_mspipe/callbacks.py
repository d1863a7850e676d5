"""Callbacks that wire the pipeline's plain classes to the Trainer.

- :class:`StalenessGuard`: checks every batch's staleness against the bound and keeps a histogram.
- :class:`PipelineStats`: stage times, bubbles, staleness and throughput to the logger.
- :class:`PipelineTimeline`: per-batch stage spans of the pipeline, drawn as a timeline picture.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.pipeline.loader import PipelinedLoader
from lightning_mspipe.pipeline.timeline import TimelineRecorder
from lightning_mspipe.plots import plot_timelines
from lightning_mspipe.reporting import histogram_scalars, log_histogram, log_image

__all__ = ["PipelineStats", "PipelineTimeline", "StalenessGuard"]

log = logging.getLogger(__name__)


def active_pipeline(trainer: L.Trainer) -> PipelinedLoader | None:
    """The training PipelinedLoader of the trainer's strategy, if it has one."""
    return getattr(trainer.strategy, "pipeline", None)


def batch_staleness(batch: TemporalBatch) -> int:
    """Writes the batch's memory snapshot missed: ``index − version seen`` (0 without a snapshot)."""
    return 0 if batch.memory is None else batch.index - batch.memory.version


class StalenessGuard(Callback):
    """Raises when a batch's staleness (``index − memory version seen``) exceeds the pipeline's bound.

    Keeps a histogram of the staleness of every training batch (``self.histogram``).
    """

    def __init__(self) -> None:
        self.histogram: Counter[int] = Counter()

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: TemporalBatch, batch_idx: int
    ) -> None:
        staleness = batch_staleness(batch)
        pipeline = active_pipeline(trainer)
        bound = 0 if pipeline is None else pipeline.bound
        if not 0 <= staleness <= bound:
            raise RuntimeError(
                f"StalenessGuard: batch {batch.index} read memory version {batch.memory.version}, staleness "
                f"{staleness}, outside the bound 0 … {bound}."
            )
        self.histogram[staleness] += 1


class PipelineStats(Callback):
    """Logs the pipeline's stage times, training-stage waits, staleness and events/s from the main thread.

    Per step: ``pipeline/staleness`` (the batch's, 0 without a pipeline) and
    ``pipeline/events_per_s`` (training events per second since the epoch started), both also in
    the progress bar beside the loss, and, only under
    :class:`~lightning_mspipe.strategy.MSPipeStrategy`, ``pipeline/wait_ms`` (how long the
    training stage waited per batch since the last logged step: with ``log_every_n_steps=1``,
    for this batch) and ``pipeline/bound`` (the staleness bound ``s`` in force, so a chart shows
    ``"auto"``'s choice over time). They are logged at the steps Lightning writes to the loggers
    (every ``log_every_n_steps``) and, for the progress bar, at the epoch's first batch and at
    most every ``progress_interval`` seconds in between: each ``LightningModule.log`` costs about
    a quarter of a millisecond on a CPU, which per batch was several percent of a short training
    step. Per epoch: the staleness histogram of the epoch's batches as one scalar per bucket,
    ``pipeline/staleness_hist/<k>`` for ``k = 0 …`` the bound (also as a histogram, ``pipeline/staleness_histogram``, to W&B and TensorBoard),
    ``pipeline/events_per_s`` of the whole epoch and, under the strategy, mean stage times
    (``pipeline/<stage>_ms``), the bound ``pipeline/max_staleness``, the largest staleness seen
    and the idle share of the training stage (``pipeline/idle_share``). ``self.epochs`` keeps one
    summary dict per epoch.

    Args:
        progress_interval: Seconds between the progress bar's updates of the per-step values.
    """

    def __init__(self, progress_interval: float = 0.5) -> None:
        if progress_interval < 0:
            raise ValueError(f"PipelineStats: progress_interval must be ≥ 0 seconds, got {progress_interval}.")
        self.progress_interval = progress_interval
        self.epochs: list[dict[str, float]] = []
        self._staleness: Counter[int] = Counter()  # this epoch's batches by staleness
        self._started = 0.0
        self._events = 0
        self._epoch_wait = 0.0  # the pipeline's total wait when the epoch started
        self._batch_wait = 0.0  # ... at the last logged step
        self._batches_since_log = 0
        self._logged_at = 0.0  # perf_counter of the last logged step (or of the epoch start)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._events = time.perf_counter(), 0
        self._staleness.clear()
        pipeline = active_pipeline(trainer)
        self._epoch_wait = self._batch_wait = 0.0 if pipeline is None else pipeline.profile.total_wait
        self._batches_since_log, self._logged_at = 0, float("-inf")  # the epoch's first batch shows at once

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: TemporalBatch, batch_idx: int
    ) -> None:
        self._events += batch.size
        self._batches_since_log += 1
        staleness = batch_staleness(batch)
        self._staleness[staleness] += 1
        now = time.perf_counter()
        if not (_writes_step_logs(trainer) or now - self._logged_at >= self.progress_interval):
            return
        self._logged_at = now
        step = dict(on_step=True, on_epoch=False)
        pl_module.log("pipeline/staleness", float(staleness), prog_bar=True, **step)
        pl_module.log("pipeline/events_per_s", self._events / max(now - self._started, 1e-9), prog_bar=True, **step)
        pipeline = active_pipeline(trainer)
        if pipeline is not None:
            # The pipeline records one wait per batch handed over; these batches' share is the growth since the last log.
            total = pipeline.profile.total_wait
            pl_module.log("pipeline/wait_ms", 1e3 * (total - self._batch_wait) / self._batches_since_log, **step)
            pl_module.log("pipeline/bound", float(pipeline.bound), **step)
            self._batch_wait = total
        self._batches_since_log = 0

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        summary = {"events_per_s": self._events / elapsed, "epoch_s": elapsed}
        pipeline = active_pipeline(trainer)
        if pipeline is not None:
            waited = pipeline.profile.total_wait - self._epoch_wait
            summary.update({f"{k}_ms": 1e3 * v for k, v in pipeline.profile.stage_times().as_dict().items()})
            summary.update(
                idle_share=waited / elapsed,
                max_staleness=float(pipeline.bound),
                max_staleness_seen=float(pipeline.profile.max_staleness_seen()),
                pipelined=float(pipeline.threaded),
            )
        upto = max([*self._staleness, 0 if pipeline is None else pipeline.bound])
        summary.update(histogram_scalars("staleness_hist", self._staleness, upto))
        self.epochs.append(summary)
        pl_module.log_dict({f"pipeline/{k}": v for k, v in summary.items()})
        log_histogram(trainer.loggers, "pipeline/staleness_histogram", self._staleness, trainer.global_step)


class PipelineTimeline(Callback):
    """Records the start and end of every stage of a window of training batches (host clock).

    At the start of training it hands its :class:`~lightning_mspipe.pipeline.timeline.TimelineRecorder`
    (``self.recorder``) to the pipeline's profile; at the end, with ``path``, it draws the
    timeline (:func:`~lightning_mspipe.plots.plot_timelines`, needs matplotlib), saves the PNG
    and sends it to the loggers that take images (W&B, TensorBoard) as ``pipeline/timeline``.
    Recording costs a lock and a dict insert per stage of a batch in the window; nothing after.

    Args:
        batches: Batches in the window.
        first: The first batch recorded (the first ones pay one-time costs).
        path: Where to save the picture at the end of training, or ``None`` for no picture.

    Raises:
        RuntimeError: at the start of training, when the training loader is not pipelined
            (the strategy is not :class:`~lightning_mspipe.strategy.MSPipeStrategy`).
    """

    def __init__(self, batches: int = 12, first: int = 2, path: str | Path | None = None) -> None:
        self.recorder = TimelineRecorder(batches, first)
        self.path = None if path is None else Path(path)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pipeline = active_pipeline(trainer)
        if pipeline is None:
            raise RuntimeError(
                "PipelineTimeline: training is not pipelined, so there is no timeline to record; "
                "train with strategy=MSPipeStrategy(...) (or `--trainer.strategy mspipe`)."
            )
        pipeline.profile.timeline = self.recorder

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pipeline = active_pipeline(trainer)
        if pipeline is not None:
            pipeline.profile.timeline = None
        if self.path is not None and trainer.is_global_zero:
            bound = 0 if pipeline is None else pipeline.bound
            plot_timelines({f"s = {bound}": self.recorder}, self.path)
            log_image(trainer.loggers, "pipeline/timeline", self.path, trainer.global_step)


def _writes_step_logs(trainer: L.Trainer) -> bool:
    """Whether Lightning writes this training step's logged values to the loggers (every
    ``log_every_n_steps``), asked from ``on_train_batch_end`` just before it decides the same."""
    return bool(getattr(trainer._logger_connector, "should_update_logs", True))  # no public accessor in Lightning 2.x
