"""The runs of bench/pipeline.py: one ``Trainer.fit`` per row and the rounds over configs.

The sequential baseline is Lightning's default strategy training on a :class:`SequentialSource`:
stages 1–3 of each batch in turn, on demand, each timed where it runs, and stage 5 timed by a
:class:`TimedWriter` handed to the model through its memory-writer seam
(:meth:`~lightning_mspipe.models.base.MemoryTGNN.use_memory_writer`). No library function is
patched. Pipelined rows take their stage times from the pipeline's own profile.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bench._common import REAL_DATASETS, CoTenantMeter, bench_trainer, wait_for_quiet
from bench.pipeline_links import Link, LinkedSource, Regime, WrappedSource, linked_model
from lightning_mspipe import MSPipeStrategy, PipelineStats, StalenessMitigation
from lightning_mspipe.data import EventStream, load_events
from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.memory import DirectWriter, MemoryStore, MemoryWrite
from lightning_mspipe.models import APAN, JODIE, TGN
from lightning_mspipe.pipeline.contract import BatchSource
from lightning_mspipe.pipeline.schedule import StageTimes
from lightning_mspipe.pipeline.stages import fetch_memory

log = logging.getLogger("bench.pipeline")

MODELS = {"tgn": TGN, "jodie": JODIE, "apan": APAN}
MODEL_ARGS = {
    "memory_dim": 100,
    "time_dim": 100,
    "embedding_dim": 100,
    "dropout": 0.1,
    "lr": 1e-4,
}  # MSPipe's settings
DATA_ARGS = {"batch_size": 600, "num_neighbors": 10, "sampling": "recent"}
EDGE_DIM = 172  # Wikipedia's LIWC features
STAGE_KEYS = ("sample", "features", "memory", "train", "write")
WINDOW = 50  # batches: the window of PipelineProfile's stage means; iteration times use the same window



# ---------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class Config:
    """One row: ``seq`` (no pipeline) or a bound (an int or ``"auto"``), with or without mitigation."""

    name: str
    bound: int | str | None  # None: sequential
    mitigation: bool = False

    @classmethod
    def parse(cls, token: str) -> Config:
        token = token.strip()
        mitigation = token.endswith("+m")
        core = token[:-2] if mitigation else token
        if core == "seq":
            if mitigation:
                raise SystemExit("bench/pipeline.py: 'seq+m' makes no sense (no pipeline, no staleness).")
            return cls("seq", None)
        if core == "auto":
            return cls(token, "auto", mitigation)
        if core.isdigit():
            return cls(token, int(core), mitigation)
        raise SystemExit(
            f"bench/pipeline.py: unknown config {token!r}; use seq, 0, 1, 2, …, auto, with '+m' for mitigation."
        )


def parse_plan(items: list[str]) -> list[tuple[str, list[Config]]]:
    plan = []
    for item in items:
        model, _, configs = item.partition("=")
        if model not in MODELS or not configs:
            raise SystemExit(
                f"bench/pipeline.py: bad --plan item {item!r}; use MODEL=CONFIG,CONFIG,… with MODEL in {list(MODELS)}."
            )
        plan.append((model, [Config.parse(t) for t in configs.split(",")]))
    return plan


# ---------------------------------------------------------------------------------------------- data
def wikipedia_with_features(datasets: Path, seed: int) -> EventStream:
    """Wikipedia events with seeded 172-dim float32 edge features (stand-ins for the LIWC features)."""
    path = datasets / REAL_DATASETS["wikipedia"][0]
    if not path.exists():
        raise SystemExit(f"bench/pipeline.py: Wikipedia events not found at {path}; pass --datasets DIR.")
    ev = load_events(path)
    generator = torch.Generator().manual_seed(seed)
    feat = torch.randn(ev.num_events, EDGE_DIM, generator=generator)
    return EventStream(
        src=ev.src, dst=ev.dst, t=ev.t, edge_feat=feat, num_nodes=ev.num_nodes, name="wikipedia+randn172"
    )


# ---------------------------------------------------------------------------------------------- clocks
class BatchClock(L.Callback):
    """End time of every training batch: the iteration time over the same window as the stage means."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ends = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.ends.append(time.perf_counter())

    def iteration(self, window: int = WINDOW) -> float:
        """Mean seconds per batch over the last ``window`` batches of the last epoch."""
        w = min(window, len(self.ends) - 1)
        return (self.ends[-1] - self.ends[-1 - w]) / w if w > 0 else float("nan")


class StageSeconds:
    """Seconds of stages 1, 2, 3 and 5 of the sequential baseline, the last ``window`` of each."""

    def __init__(self, device: torch.device, window: int = WINDOW) -> None:
        self.device, self.window = device, window
        self.seconds: dict[str, list[float]] = {k: [] for k in ("sample", "features", "memory", "write")}

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage`` (on CUDA after a device sync, so the copies are in it)."""
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[stage].append(time.perf_counter() - started)

    def stage_times(self, iteration: float) -> StageTimes:
        """Means over the last ``window`` batches; τ4 is the rest of the iteration, as the pipeline measures it."""
        mean = {k: statistics.fmean(v[-self.window :]) if v else 0.0 for k, v in self.seconds.items()}
        train = max(iteration - sum(mean.values()), 0.0)
        return StageTimes(mean["sample"], mean["features"], mean["memory"], train, mean["write"])


class SequentialSource(WrappedSource):
    """The sequential baseline's training loader: stages 1, 2 and 3 of each batch in turn, on demand.

    Lightning asks for batch ``j`` after the step of batch ``j − 1`` (the loader is sized, so it
    does not prefetch), and that step already handed its write to the model's writer, so every
    batch reads memory with all earlier writes: plain synchronous training, with stage 3 moved
    from the step into the loader, where it is timed. Every other stage is delegated.
    """

    def __init__(self, source: BatchSource, store: MemoryStore, clock: StageSeconds) -> None:
        super().__init__(source)
        self.store, self.clock = store, clock

    def __iter__(self) -> Iterator[TemporalBatch]:
        for index in range(self.start_epoch(), len(self)):
            with self.clock.timing("sample"):
                batch = self.sample(index)
            with self.clock.timing("features"):
                batch = self.fetch_features(batch).to(self.clock.device)
            with self.clock.timing("memory"):
                batch = fetch_memory(self.store, batch, self.clock.device)
            self.advance(index)
            yield batch


class TimedWriter(DirectWriter):
    """Applies each write at once, as the default writer does, and times it as stage 5."""

    def __init__(self, store: MemoryStore, clock: StageSeconds) -> None:
        super().__init__(store)
        self.clock = clock

    def submit_write(self, index: int, write: MemoryWrite) -> None:
        with self.clock.timing("write"):
            super().submit_write(index, write)


# ---------------------------------------------------------------------------------------------- one row
def run_row(
    model_name: str,
    config: Config,
    events: EventStream,
    args: argparse.Namespace,
    part: str,
    regime: Regime | None = None,
    max_batches: int | None = None,
    test: bool = True,
) -> dict[str, Any]:
    """One fit (and, with ``test``, one test) of ``model_name`` under ``config``; returns the row.

    With a ``regime`` the row runs on emulated links (:mod:`bench.pipeline_links`).
    """
    cuda = args.device == "cuda"
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dm = TemporalDataModule(events=events, mrr_negatives=args.mrr_negatives, seed=args.seed, **DATA_ARGS)
    dm.setup("fit")
    model_cls = MODELS[model_name]
    source: BatchSource = dm.train_dataloader()
    if regime is not None:
        h2d, d2h = Link("host→device"), Link("device→host")
        model_cls = linked_model(model_cls, h2d, d2h, regime)
        source = LinkedSource(source, h2d, regime.features_s)
    torch.manual_seed(args.seed)
    model = model_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, pin_memory=cuda, **MODEL_ARGS)
    stats, clock = PipelineStats(), BatchClock()
    mitigation = StalenessMitigation() if config.mitigation else None
    sequential = StageSeconds(device) if config.bound is None else None
    if sequential is not None:
        strategy: Any = "auto"  # Lightning's default single-device strategy: no pipeline
        source = SequentialSource(source, model.memory, sequential)  # type: ignore[assignment]
        model.use_memory_writer(TimedWriter(model.memory, sequential))
    else:
        strategy = MSPipeStrategy(
            max_staleness=config.bound, mitigation=mitigation, memory_device="pinned" if cuda else None
        )
    trainer = bench_trainer(
        accelerator="gpu" if cuda else "cpu", devices=1, strategy=strategy, max_epochs=args.epochs,
        limit_train_batches=max_batches or 1.0, limit_val_batches=0, callbacks=[stats, clock],
    )
    load_before = os.getloadavg()[0]
    trainer.fit(model, train_dataloaders=source)
    epoch = stats.epochs[-1]
    iteration = clock.iteration()
    pipeline = getattr(trainer.strategy, "pipeline", None)
    row: dict[str, Any] = {
        "part": part,
        "model": model_name,
        "config": config.name,
        "mitigation": config.mitigation,
        "batches": trainer.num_training_batches,
        "epochs": args.epochs,
        "events_per_s": epoch["events_per_s"],
        "epoch_s": epoch["epoch_s"],
        "iteration_ms": 1e3 * iteration,
        "load_1min_before": load_before,
        "regime": None if regime is None else regime.name,
        "emulated_latency_ms": None if regime is None else regime.latencies_ms(),
    }
    if pipeline is None:
        assert sequential is not None
        times = sequential.stage_times(iteration)
        row.update(s="-", pipelined=False, idle_share=(times.sample + times.features + times.memory) / iteration,
                   staleness_mean=0.0, staleness_max=0)
    else:
        times = pipeline.profile.stage_times()
        hist = pipeline.profile.staleness
        row.update(
            s=str(pipeline.bound),
            pipelined=bool(pipeline.threaded),
            idle_share=epoch["idle_share"],
            staleness_mean=sum(k * v for k, v in hist.items()) / max(sum(hist.values()), 1),
            staleness_max=max(hist) if hist else 0,
            staleness_hist={int(k): v for k, v in sorted(hist.items())},
            choices=[{k: (round(v, 6) if isinstance(v, float) else v) for k, v in c.items()}
                     for c in pipeline.choices],
        )
        if config.bound == "auto":
            row["s"] = f"auto→{pipeline.bound}" + ("" if pipeline.threaded else " inline")
    if mitigation is not None:
        row["blended_share"] = mitigation.blended_share
    row.update({f"tau{j}_ms": 1e3 * getattr(times, k) for j, k in enumerate(STAGE_KEYS, start=1)})
    row["period_ms"] = 1e3 * times.period  # P_model = max(τ1, τ2 + τ3, τ4, τ5)
    row["sequential_ms"] = 1e3 * times.sequential  # Στ
    row["efficiency"] = row["period_ms"] / row["iteration_ms"]
    row["test_ap"] = None
    if test and regime is None:
        started = time.perf_counter()
        metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
        row["test_ap"] = float(metrics["test/ap"])
        row["test_mrr"] = float(metrics["test/mrr"]) if "test/mrr" in metrics else None
        row["test_s"] = time.perf_counter() - started
    row["load_1min_after"] = os.getloadavg()[0]
    return row


def run_configs(
    model_name: str,
    configs: list[Config],
    events: EventStream,
    args: argparse.Namespace,
    part: str,
    repeats: int,
    on_run: Callable[[dict[str, Any]], None],
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """``repeats`` rounds over ``configs`` (each round starts one config later, so slow drifts of the
    machine's load spread over all configs); one row per config: the run with the median events/s,
    with every run's events/s and test AP attached.

    Each run first waits (up to ``--quiet-wait`` s) until other processes use less than
    ``--quiet-threshold`` of the CPU, and is redone (up to ``--retries`` times) when they used more
    during it: on 2 cores another torch job slows a step by 10–20×, which no median can absorb.
    """
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
    discarded: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
    for r in range(repeats):
        for config in configs[r % len(configs) :] + configs[: r % len(configs)]:
            for attempt in range(args.retries + 1):
                waited = (
                    wait_for_quiet(args.quiet_threshold, args.quiet_wait, sample=1.0)
                    if args.quiet_threshold > 0
                    else 0.0
                )
                meter = CoTenantMeter()
                row = run_row(model_name, config, events, args, part, **kwargs)
                row.update(repeat=r, attempt=attempt, waited_for_quiet_s=waited, cotenant_share=meter.share())
                on_run(row)
                if row["cotenant_share"] is None or row["cotenant_share"] <= args.quiet_threshold:
                    break
                if attempt < args.retries:
                    discarded[config.name].append(
                        {k: row[k] for k in ("repeat", "events_per_s", "cotenant_share", "test_ap", "s")}
                    )
                log.info(
                    "    other processes used %.0f%% of the CPU during this run: %s",
                    100 * row["cotenant_share"],
                    "run it again" if attempt < args.retries else "kept (no retries left)",
                )
            runs[config.name].append(row)
    rows = []
    for config in configs:
        ordered = sorted(runs[config.name], key=lambda x: x["events_per_s"])
        row = dict(ordered[(len(ordered) - 1) // 2])  # the median run (the lower one of an even count)
        row["runs_events_per_s"] = [x["events_per_s"] for x in runs[config.name]]
        row["runs_test_ap"] = [x["test_ap"] for x in runs[config.name]]
        row["runs_s"] = [x["s"] for x in runs[config.name]]
        row["runs_load"] = [round(x["load_1min_before"], 2) for x in runs[config.name]]
        row["runs_cotenant_share"] = [x["cotenant_share"] for x in runs[config.name]]
        row["discarded_runs"] = discarded[config.name]
        rows.append(row)
    return rows


