"""Profile the pipeline: the same batches without lanes, pipelined at ``s = 0`` and at the chosen ``s``.

:func:`profile_pipeline` trains a few batches three times from the same initial weights and
returns each run's stage timeline (:class:`~lightning_mspipe.pipeline.timeline.TimelineRecorder`);
``mspipe profile`` draws them:

1. **sequential** (``mode="sequential"``, ``s = 0``): every stage on the training thread, one
   batch at a time, as Lightning's own loop runs them; the training stage idles while
   stages 1–3 and 5 run (the bubbles);
2. **pipelined at** ``s = 0``: the lanes sample and fetch features ahead, but the memory fetch of
   batch ``j`` still waits for the write of batch ``j − 1``;
3. **pipelined at the chosen** ``s``: chosen from the sequential run's stage times by the formula
   ``max_staleness="auto"`` uses, so the memory fetch of a later batch runs while an earlier one trains.

On a CPU the memory stages take a millisecond or two and the fetch of the next batch fits in
the current batch's backward pass, so run 2 already has almost no bubbles;
:func:`slow_memory_link` adds a delay to every memory gather (stage 3) and write (stage 5), as a
slow host–device link would, to show what staleness hides on a GPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lightning as L
import torch

from lightning_mspipe.callbacks import PipelineTimeline
from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore, MemoryWrite
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.pipeline.schedule import StageTimes, auto_staleness
from lightning_mspipe.pipeline.timeline import TimelineRecorder
from lightning_mspipe.strategy import MSPipeStrategy

__all__ = ["ProfileReport", "profile_pipeline", "slow_memory_link"]


@dataclass
class ProfileReport:
    """What :func:`profile_pipeline` measured.

    Args:
        chosen: The bound chosen from the sequential run's stage times (or the one given).
        times: Those mean stage times (seconds).
        sequential: The timeline of the sequential run (no lanes, ``s = 0``).
        timelines: The bound of each pipelined run → its timeline (``0`` and ``chosen``).
    """

    chosen: int
    times: StageTimes
    sequential: TimelineRecorder
    timelines: dict[int, TimelineRecorder]

    def panels(self) -> dict[str, TimelineRecorder]:
        """Panel titles → timelines for :func:`~lightning_mspipe.plots.plot_timelines`, in run order."""
        panels = {"s = 0, sequential (every stage on the training thread)": self.sequential}
        for s, recorder in self.timelines.items():
            panels[f"s = {s}, pipelined" + (" (chosen)" if s == self.chosen else "")] = recorder
        return panels


@contextmanager
def slow_memory_link(store: MemoryStore, seconds: float) -> Iterator[None]:
    """Within the block, every ``store.gather`` (stage 3) and ``store.scatter`` (stage 5) first sleeps ``seconds``.

    A stand-in for a slow host–device link on a machine without one; the store is restored on exit.
    """
    if seconds <= 0:
        yield
        return
    gather, scatter = store.gather, store.scatter

    def slow_gather(nodes: torch.Tensor) -> MemorySnapshot:
        time.sleep(seconds)
        return gather(nodes)

    def slow_scatter(write: MemoryWrite, synchronize: bool = False) -> int:
        time.sleep(seconds)
        return scatter(write, synchronize=synchronize)

    store.gather, store.scatter = slow_gather, slow_scatter  # instance attributes shadow the methods
    try:
        yield
    finally:
        del store.gather, store.scatter


def profile_pipeline(
    model: MemoryTGNN,
    datamodule: L.LightningDataModule,
    *,
    batches: int = 12,
    warmup: int = 2,
    slow_link_ms: float = 0.0,
    max_staleness: int | None = None,
    max_auto_staleness: int = 8,
    device: torch.device | str = "cpu",
) -> ProfileReport:
    """Record the timeline of the same batches trained sequentially, pipelined at ``s = 0`` and at the chosen ``s``.

    Each run trains ``warmup + batches + 1`` batches of the first epoch (no validation) on a
    copy of ``model`` as it is now, so all runs start from the same weights; the timelines hold
    batches ``warmup … warmup + batches − 1``.

    Args:
        model: A memory-based TGNN (TGN, JODIE, APAN); it is not trained itself: each run trains a
            new instance of its class (same hyperparameters) loaded with its current state.
        datamodule: Its data.
        batches: Batches in each timeline.
        warmup: Batches trained before the timeline starts (one-time costs).
        slow_link_ms: Milliseconds added to every memory gather and write (:func:`slow_memory_link`).
        max_staleness: The bound of the last run; default: the one ``"auto"`` would choose from
            the sequential run's stage times, clamped to ``max_auto_staleness`` (no third run if that is 0).
        max_auto_staleness: Upper clamp of the chosen bound.
        device: The compute device.

    Raises:
        TypeError: ``model`` is not a MemoryTGNN (the pipeline trains only those).
        ValueError: ``batches`` < 1, ``warmup`` < 0, ``slow_link_ms`` < 0 or ``max_staleness`` < 1.
    """
    if not isinstance(model, MemoryTGNN):
        raise TypeError(f"profile_pipeline: the pipeline trains memory-based TGNNs; got {type(model).__name__}.")
    if batches < 1 or warmup < 0 or slow_link_ms < 0 or (max_staleness is not None and max_staleness < 1):
        raise ValueError(
            f"profile_pipeline: need batches ≥ 1, warmup ≥ 0, slow_link_ms ≥ 0 and max_staleness ≥ 1 (or None), got "
            f"batches={batches}, warmup={warmup}, slow_link_ms={slow_link_ms}, max_staleness={max_staleness}."
        )
    initial = copy.deepcopy(model.state_dict())
    delay = slow_link_ms / 1e3

    def run(bound: int, mode: str) -> tuple[TimelineRecorder, StageTimes]:
        return _timed_run(_fresh(model, initial), datamodule, bound, mode, batches, warmup, delay, device)

    sequential, times = run(0, "sequential")
    chosen = auto_staleness(times, max_auto_staleness) if max_staleness is None else max_staleness
    timelines = {s: run(s, "bounded")[0] for s in sorted({0, chosen})}
    return ProfileReport(chosen=chosen, times=times, sequential=sequential, timelines=timelines)


def _fresh(model: MemoryTGNN, state: dict[str, torch.Tensor]) -> MemoryTGNN:
    """A new instance of ``model``'s class with its hyperparameters and the weights and memory in ``state``."""
    fresh = type(model)(**{k: v for k, v in model.hparams.items() if not k.startswith("_")})  # not the CLI's _class_path
    fresh.load_state_dict(state)
    return fresh


def _timed_run(
    model: MemoryTGNN, datamodule: L.LightningDataModule, bound: int, mode: str, batches: int, warmup: int,
    delay: float, device: torch.device | str,
) -> tuple[TimelineRecorder, StageTimes]:
    """Train ``warmup + batches + 1`` batches at ``bound`` in ``mode``; the timeline and the mean stage times of
    the window."""
    timeline = PipelineTimeline(batches=batches, first=warmup)
    device = torch.device(device)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=warmup + batches + 1, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=[device.index or 0] if device.type == "cuda" else 1,
        strategy=MSPipeStrategy(max_staleness=bound, mode=mode), callbacks=[timeline], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    with slow_memory_link(model.memory, delay):
        trainer.fit(model, datamodule)
    assert trainer.strategy.pipeline is not None, "MSPipeStrategy pipelines the TemporalDataModule's training loader"
    return timeline.recorder, trainer.strategy.pipeline.profile.stage_times(last=batches)
