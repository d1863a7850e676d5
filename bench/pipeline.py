"""Benchmark: MSPipe's pipeline against sequential training (TGN, JODIE, APAN on Wikipedia).

Wikipedia events (``wikipedia/wikipedia_edges.csv.gz``) with 172-dim float32 edge features in host
memory (the original's LIWC features are not in our copy: they are drawn seeded from N(0, 1)),
the memory store in host memory, batch 600, 10 most recent neighbours, dims 100, Adam lr 1e-4.
Each row is one ``Trainer.fit`` (default: one epoch) and, in parts 1 and 3, one ``Trainer.test``:

- ``seq``: Lightning's default strategy, no pipeline (the TGL baseline);
- ``0``: ``MSPipeStrategy(max_staleness=0)`` (prefetches sampling and features only: "presample");
- ``1``, ``2``, ``3``, ``auto``: ``MSPipeStrategy(max_staleness=s)``; a ``+m`` suffix adds
  ``mitigation=StalenessMitigation()``.

Every config runs ``--repeats`` times (default 3 on CPU) in rotated order; a row is the run with the
median events/s. Measured per row: events/s of the training epoch (``PipelineStats``; validation is off during
``fit``, ``trainer.test`` replays the validation events into memory first), test AP (one fixed
negative per event unless ``--mrr-negatives`` > 1), the bound ``s`` in force, the training stage's
idle share, mean stage times τ1…τ5 and the pipeline efficiency ``max τ / iteration time``
(iteration time: mean seconds per batch over the last 50 batches, the window of the stage means;
1.0 is the physical limit of a 5-stage pipeline).
Pipelined rows take τ from ``trainer.strategy.pipeline.profile``; the sequential row times the same
functions in place (``TemporalBatchLoader.sample``/``fetch_features``, ``fetch_memory`` inside the
step, ``MemoryStore.scatter``) and τ4 is the rest of the iteration, as the pipeline measures it.

Parts:

1. CPU, real stage times.
2. CPU, EMULATED transfers (``--emulate-transfer-ms``): a fixed sleep before
   ``TemporalBatchLoader.fetch_features`` (stage 2), ``MemoryStore.gather`` (stage 3) and
   ``MemoryStore.scatter`` (stage 5), standing in for host↔device copies, patched on the classes in
   this process only, so the sequential baseline and the pipeline pay exactly the same latency;
   the sleep runs before the original method, outside the store's lock. ``auto`` (the default) sizes
   the latency L to half of part 1's sequential TGN τ4, so that τ2 + τ3 ≈ τ4, and applies it to
   stages 2, 3 and 5; ``auto23`` (also run by default, a diagnostic) applies L to stages 2 and 3
   only, which separates what the schedule hides from what stage 5 on the training thread costs.
3. GPU (``--device cuda``): Trainer(accelerator="gpu"), memory store in pinned host memory
   (``MemoryStore(pin_memory=True)`` for every row, ``MSPipeStrategy(memory_device="pinned")``).

Run from the repository root (a long run: use ``nice``)::

    nice -n 5 python bench/pipeline.py                       # parts 1 and 2 on CPU (~25 min on 2 cores)
    python bench/pipeline.py --device cuda --tag gpu_H100     # part 3 (bench/gpu_suite.sh runs this)
    python bench/pipeline.py --plan tgn=seq,0,auto --max-train-batches 20 --parts 1   # a quick look

Writes ``bench/results/pipeline_<tag>.json`` and ``.md`` (``--tag`` defaults to the device).
Not collected by pytest (``testpaths`` is ``tests/unit``, ``tests/integration``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DATASETS,
    REAL_DATASETS,
    REPO,
    RESULTS,
    CoTenantMeter,
    bench_trainer,
    machine_info,
    quiet_lightning,
    wait_for_quiet,
    write_results,
)
from lightning_mspipe import MSPipeStrategy, PipelineStats, StalenessMitigation
from lightning_mspipe.data import EventStream, load_events
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.data.loader import TemporalBatchLoader
from lightning_mspipe.memory.store import MemoryStore
from lightning_mspipe.models import APAN, JODIE, TGN
from lightning_mspipe.models import base as model_base
from lightning_mspipe.pipeline.schedule import StageTimes

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

# Default plans (model=configs). CPU: TGN in full, JODIE/APAN on the configs that carry the
# targets; sized so that parts 1 + 2 take about 25 minutes on 2 shared cores.
CPU_PLAN = [
    "tgn=seq,0,1,2,3,auto,1+m,2+m,3+m,auto+m",
    "jodie=seq,0,1,2,auto,2+m,auto+m",
    "apan=seq,0,1,2,auto,2+m,auto+m",
]
GPU_PLAN = ["tgn=seq,0,1,2,3,auto,auto+m", "jodie=seq,0,1,2,auto,auto+m", "apan=seq,0,1,2,auto,auto+m"]
EMULATED_CONFIGS = "seq,0,1,2,auto"

log = logging.getLogger("bench.pipeline")


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


def parse_latency(text: str) -> tuple[float, float, float] | str:
    """``"auto"`` (τ4/2 on stages 2, 3, 5), ``"auto23"`` (τ4/2 on stages 2, 3 only), ``"L"`` (ms, stages 2, 3
    and 5) or ``"L2,L3,L5"`` (ms per stage)."""
    if text in ("auto", "auto23"):
        return text
    parts = [float(x) for x in text.split(",")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 0:
        raise SystemExit(
            f"bench/pipeline.py: --emulate-transfer-ms takes 'auto', 'L' or 'L2,L3,L5' (ms ≥ 0), got {text!r}."
        )
    return tuple(p / 1e3 for p in parts)  # type: ignore[return-value]


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


# ---------------------------------------------------------------------------------------------- patches
def _patch(
    owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Callable[[], None]:
    original = getattr(owner, name)
    setattr(owner, name, functools.wraps(original)(make(original)))
    return lambda: setattr(owner, name, original)


@contextlib.contextmanager
def emulated_transfers(latency: tuple[float, float, float]) -> Iterator[None]:
    """Sleep before stage 2 (fetch features), stage 3 (``MemoryStore.gather``) and stage 5 (``MemoryStore.scatter``).

    Patched on the classes, so every caller (the sequential step, the pipeline's producer thread,
    the write callback) pays the same latency. The sleep comes before the original method runs, so
    it is outside the store's lock and releases the GIL, like a DMA copy would.
    """

    def delayed(seconds: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                time.sleep(seconds)
                return original(*args, **kwargs)

            return wrapper

        return make

    restore = [
        _patch(TemporalBatchLoader, "fetch_features", delayed(latency[0])),
        _patch(MemoryStore, "gather", delayed(latency[1])),
        _patch(MemoryStore, "scatter", delayed(latency[2])),
    ]
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


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


class SequentialStageTimer(L.Callback):
    """Stage times of the sequential baseline, timed in place during the training epoch.

    Wraps the functions the default strategy's path calls: ``TemporalBatchLoader.sample`` (τ1) and
    ``.fetch_features`` (τ2) in Lightning's batch fetch, ``fetch_memory`` inside the step (τ3),
    ``MemoryStore.scatter`` in the model's ``on_train_batch_end`` (τ5). τ4 is the rest of the
    iteration (step, backward, optimizer, Lightning's loop), as the pipeline measures it.
    """

    def __init__(self, device: torch.device, window: int = WINDOW) -> None:
        self.device, self.window = device, window
        self.seconds: dict[str, list[float]] = {k: [] for k in ("sample", "features", "memory", "write")}
        self.active = False

    def _timed(self, stage: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if not self.active:
                    return original(*args, **kwargs)
                started = time.perf_counter()
                out = original(*args, **kwargs)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.seconds[stage].append(time.perf_counter() - started)
                return out

            return wrapper

        return make

    @contextlib.contextmanager
    def installed(self) -> Iterator[SequentialStageTimer]:
        restore = [
            _patch(TemporalBatchLoader, "sample", self._timed("sample")),
            _patch(TemporalBatchLoader, "fetch_features", self._timed("features")),
            _patch(model_base, "fetch_memory", self._timed("memory")),
            _patch(MemoryStore, "scatter", self._timed("write")),
        ]
        try:
            yield self
        finally:
            for undo in reversed(restore):
                undo()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = {k: [] for k in self.seconds}
        self.active = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = False

    def stage_times(self, iteration: float) -> StageTimes:
        """Means over the last ``window`` calls of each stage (the pipeline's profile window); τ4 is the rest."""
        mean = {k: statistics.fmean(v[-self.window :]) if v else 0.0 for k, v in self.seconds.items()}
        train = max(iteration - sum(mean.values()), 0.0)
        return StageTimes(mean["sample"], mean["features"], mean["memory"], train, mean["write"])


# ---------------------------------------------------------------------------------------------- one row
def run_row(
    model_name: str,
    config: Config,
    events: EventStream,
    args: argparse.Namespace,
    part: str,
    latency: tuple[float, float, float] | None = None,
    max_batches: int | None = None,
    test: bool = True,
) -> dict[str, Any]:
    """One fit (and, with ``test``, one test) of ``model_name`` under ``config``; returns the row."""
    cuda = args.device == "cuda"
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dm = TemporalDataModule(events=events, mrr_negatives=args.mrr_negatives, seed=args.seed, **DATA_ARGS)
    torch.manual_seed(args.seed)
    model = MODELS[model_name](num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, pin_memory=cuda, **MODEL_ARGS)
    stats, clock = PipelineStats(), BatchClock()
    callbacks: list[L.Callback] = [stats, clock]
    timer = SequentialStageTimer(device) if config.bound is None else None
    mitigation = StalenessMitigation() if config.mitigation else None
    if timer is not None:
        strategy: Any = "auto"  # Lightning's default single-device strategy: no pipeline
        callbacks.append(timer)
    else:
        strategy = MSPipeStrategy(
            max_staleness=config.bound, mitigation=mitigation, memory_device="pinned" if cuda else None
        )
    trainer = bench_trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        strategy=strategy,
        max_epochs=args.epochs,
        limit_train_batches=max_batches or 1.0,
        limit_val_batches=0,
        callbacks=callbacks,
    )
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if latency is not None:
            stack.enter_context(emulated_transfers(latency))
        if timer is not None:
            stack.enter_context(timer.installed())
        trainer.fit(model, dm)
    epoch = stats.epochs[-1]
    batches = trainer.num_training_batches
    iteration = clock.iteration()
    pipeline = getattr(trainer.strategy, "pipeline", None)
    row: dict[str, Any] = {
        "part": part,
        "model": model_name,
        "config": config.name,
        "mitigation": config.mitigation,
        "batches": batches,
        "epochs": args.epochs,
        "events_per_s": epoch["events_per_s"],
        "epoch_s": epoch["epoch_s"],
        "iteration_ms": 1e3 * iteration,
        "load_1min_before": load_before,
        "emulated_latency_ms": None if latency is None else [1e3 * x for x in latency],
    }
    if pipeline is None:
        assert timer is not None
        times = timer.stage_times(iteration)
        row.update(
            s="-",
            pipelined=False,
            idle_share=(times.sample + times.features + times.memory) / iteration,
            staleness_mean=0.0,
            staleness_max=0,
        )
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
            choices=[
                {k: (round(v, 6) if isinstance(v, float) else v) for k, v in c.items()}
                for c in pipeline.choices
            ],
        )
        if config.bound == "auto":
            row["s"] = f"auto→{pipeline.bound}" + ("" if pipeline.threaded else " inline")
    if mitigation is not None:
        row["blended_share"] = mitigation.blended_share
    row.update({f"tau{j}_ms": 1e3 * getattr(times, k) for j, k in enumerate(STAGE_KEYS, start=1)})
    row["max_tau_ms"] = 1e3 * max(times.as_dict().values())
    row["efficiency"] = row["max_tau_ms"] / row["iteration_ms"]
    row["test_ap"] = None
    if test and latency is None:
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


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Median events/s relative to the same model's ``seq`` and ``0`` rows of the same part."""
    for row in rows:
        for ref, key in (("seq", "vs_seq"), ("0", "vs_s0")):
            base = next(
                (
                    r
                    for r in rows
                    if r["part"] == row["part"] and r["model"] == row["model"] and r["config"] == ref
                ),
                None,
            )
            row[key] = None if base is None else row["events_per_s"] / base["events_per_s"]


# ---------------------------------------------------------------------------------------------- output
def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value) if spec == "s" else format(value, spec)


COLUMNS = [
    ("model", "model", "s"),
    ("config", "config", "s"),
    ("s in force", "s", "s"),
    ("events/s", "events_per_s", ",.0f"),
    ("×seq", "vs_seq", ".3f"),
    ("×s0", "vs_s0", ".3f"),
    ("test AP", "test_ap", ".4f"),
    ("idle", "idle_share", ".3f"),
    ("eff", "efficiency", ".3f"),
    ("τ1", "tau1_ms", ".1f"),
    ("τ2", "tau2_ms", ".1f"),
    ("τ3", "tau3_ms", ".1f"),
    ("τ4", "tau4_ms", ".1f"),
    ("τ5", "tau5_ms", ".1f"),
    ("iter", "iteration_ms", ".1f"),
    ("stale", "staleness_mean", ".2f"),
    ("other", "cotenant_share", ".3f"),
    ("load", "load_1min_before", ".2f"),
]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt(r.get(key), spec) for _, key, spec in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def spread_table(rows: list[dict[str, Any]]) -> str:
    """Every run's events/s, test AP and bound, per config (the main table shows the median run)."""
    head = (
        "| model | config | events/s of each run | min/max | test AP of each run | s of each run "
        "| other processes' CPU share | load before each run |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = r["runs_events_per_s"]
        lines.append(
            f"| {r['model']} | {r['config']} | {', '.join(f'{x:,.0f}' for x in eps)} | "
            f"{min(eps) / max(eps):.3f} | {', '.join(fmt(x, '.4f') for x in r['runs_test_ap'])} | "
            f"{', '.join(r['runs_s'])} | {', '.join(fmt(x, '.3f') for x in r['runs_cotenant_share'])} | "
            f"{', '.join(f'{x:.2f}' for x in r['runs_load'])} |"
        )
    return "\n".join(lines)


def emulation_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per emulated setting: steady-state speed-up of each pipelined row over ``seq`` (ratio of the
    iteration times over the last ``WINDOW`` batches, so auto's inline warm-up is left out; the events/s
    ratio, warm-up included, is kept too) against the ideal ``Στ / max τ`` and against this
    implementation's bound ``Στ / max(τ1+τ2+τ3, τ4+τ5)`` (one producer thread runs stages 1–3 in turn;
    stage 5 runs on the training thread after the step), with the τ of the ``seq`` row."""
    out = []
    for part in sorted({r["part"] for r in rows if r["part"].startswith("2")}):
        part_rows = [r for r in rows if r["part"] == part]
        seq = next((r for r in part_rows if r["config"] == "seq"), None)
        if seq is None:
            continue
        tau = [seq[f"tau{j}_ms"] for j in range(1, 6)]
        ideal = sum(tau) / max(tau)
        bound = sum(tau) / max(tau[0] + tau[1] + tau[2], tau[3] + tau[4])
        for r in part_rows:
            if r["config"] == "seq":
                continue
            speedup = seq["iteration_ms"] / r["iteration_ms"]
            out.append(
                {
                    "part": part,
                    "config": r["config"],
                    "speedup": speedup,
                    "events_per_s_ratio": r["vs_seq"],
                    "ideal_speedup": ideal,
                    "speedup_share_of_ideal": speedup / ideal,
                    "implementation_bound_speedup": bound,
                    "efficiency": r["efficiency"],
                    "latency_ms": r["emulated_latency_ms"],
                }
            )
    return out


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout  # not stripped: each line is "XY path", and X may be a space
        changed = [line[3:] for line in dirty.splitlines() if line.strip()]
        return head + (" + uncommitted changes in " + ", ".join(changed) if changed else "")
    except OSError:
        return "unknown"


def target_checks(rows: list[dict[str, Any]], emulation: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with the measured figures and MET / MISSED."""

    def find(part: str, model: str, config: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["part"], r["model"], r["config"]) == (part, model, config)), None)

    out = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    for part, model in sorted({(r["part"], r["model"]) for r in rows if not r["part"].startswith("2")}):
        auto, s0 = find(part, model, "auto"), find(part, model, "0")
        if auto is not None and auto.get("vs_seq") is not None and auto.get("vs_s0") is not None:
            ok = auto["vs_seq"] >= 0.98 and auto["vs_s0"] >= 0.98
            out.append(
                f"- {model}: auto events/s ≥ 0.98× seq and s=0: {auto['vs_seq']:.3f}× seq, "
                f"{auto['vs_s0']:.3f}× s=0 ({auto['s']}): {verdict(ok)}"
            )
        if auto is not None and s0 is not None and auto["test_ap"] is not None and s0["test_ap"] is not None:
            gap = 100 * (auto["test_ap"] - s0["test_ap"])
            out.append(
                f"- {model}: test AP at auto within 0.3 points of s=0: {100 * auto['test_ap']:.2f} vs "
                f"{100 * s0['test_ap']:.2f} ({gap:+.2f}): {verdict(abs(gap) <= 0.3)}"
            )
        for r in rows:
            if (r["part"], r["model"]) != (part, model) or not r["mitigation"]:
                continue
            plain = find(part, model, r["config"][:-2])
            if plain is None or plain["test_ap"] is None or r["test_ap"] is None:
                continue
            gap = 100 * (r["test_ap"] - plain["test_ap"])
            out.append(
                f"- {model}: mitigation does not lower AP at `{r['config'][:-2]}`: {100 * r['test_ap']:.2f} with vs "
                f"{100 * plain['test_ap']:.2f} without ({gap:+.2f}; blended share "
                f"{r.get('blended_share', 0.0):.3f}): {verdict(gap >= 0)}"
            )
    for e in emulation:
        if e["config"] != "auto":
            continue
        ok_eff, ok_speed = e["efficiency"] >= 0.9, e["speedup_share_of_ideal"] >= 0.9
        out.append(
            f"- EMULATED part {e['part']} (+{'/'.join(f'{x:g}' for x in e['latency_ms'])} ms): efficiency at auto "
            f"≥ 0.9: {e['efficiency']:.3f}: {verdict(ok_eff)}; speed-up within 10% of Στ/max τ = "
            f"{e['ideal_speedup']:.2f}×: {e['speedup']:.2f}× ({e['speedup_share_of_ideal']:.0%}): {verdict(ok_speed)}"
        )
    return out


def render_markdown(
    rows: list[dict[str, Any]], emulation: list[dict[str, Any]], config: dict[str, Any], cuda: bool
) -> str:
    lines = [
        f"# MSPipe pipeline vs sequential training ({'GPU, part 3' if cuda else 'CPU, parts 1 and 2'})",
        "",
    ]
    batches = config["max_train_batches"] or "all"
    setup = (
        f"Data: {config['data']}; memory store in {config['memory_store']}; batch 600, 10 most recent neighbours, "
        f"dims 100, Adam lr 1e-4, dropout 0.1. Each run: {config['epochs']} epoch(s), {batches} training batches per "
        f"epoch (emulated rows: {config['emulate_batches']}); validation off during fit (test replays the validation "
        f"events into memory first); test AP with {config['data_module']['mrr_negatives']} fixed negative(s) per "
        f"event. {config['repeats']} run(s) per config, in rotated order; each table row is the run with the median "
        "events/s."
    )
    columns = (
        "Columns: `s in force`: the bound the pipeline ran with (`auto→s inline`: auto measured both and kept the "
        "stages inline, i.e. sequential); `×seq`, `×s0`: events/s relative to the same model's `seq` and `0` rows; "
        "`idle`: share of the epoch the training stage waited for its batch, from `PipelineStats` (it counts waits "
        "in threaded segments only, so an `auto→s inline` row shows ≈ 0 although its step waits τ1+τ2+τ3 inline; "
        "`seq`: (τ1+τ2+τ3)/iteration); `eff`: "
        "max τ / iteration time (1.0 is the physical limit); τ1…τ5 (ms): sample, fetch features, fetch memory, train "
        f"step, write memory, means over the last {WINDOW} batches (pipelined rows: the pipeline's profile; `seq`: the "
        "same functions timed in place, τ4 = the rest of the iteration); `iter`: ms per batch over the same batches; "
        "`stale`: mean staleness; `other`: share of the machine's CPU time other processes used during the "
        "run (a run above the threshold is redone, see `discarded_runs` in the JSON); `load`: 1-minute load "
        "average before the run (a trailing average that also counts this benchmark's own threads)."
    )
    lines += [
        f"Command: `{config['command']}` ({config['wall_s'] / 60:.1f} min); code: {config['git']}.",
        "",
        setup,
        "",
        columns,
        "",
    ]
    for part in sorted({r["part"] for r in rows}):
        part_rows = [r for r in rows if r["part"] == part]
        if part.startswith("2"):
            lat = part_rows[0]["emulated_latency_ms"]
            title = (
                f"## Part {part}: CPU, EMULATED transfers (+{lat[0]:g} / {lat[1]:g} / {lat[2]:g} ms sleep "
                "before stages 2 / 3 / 5, identical for every row)"
            )
            lines += [title, ""]
        else:
            lines += [f"## Part {part}: {'GPU' if cuda else 'CPU'}, real stage times", ""]
        lines += [table(part_rows), ""]
        for e in (e for e in emulation if e["part"] == part):
            lines.append(
                f"- EMULATED `{e['config']}`: steady-state speed-up over seq {e['speedup']:.2f}× (events/s ratio "
                f"{e['events_per_s_ratio']:.2f}×) vs ideal Στ/max τ = "
                f"{e['ideal_speedup']:.2f}× ({e['speedup_share_of_ideal']:.0%} of it); this implementation's bound "
                f"Στ/max(τ1+τ2+τ3, τ4+τ5) = {e['implementation_bound_speedup']:.2f}×; efficiency {e['efficiency']:.3f}."
            )
        for r in (r for r in part_rows if str(r["config"]).startswith("auto")):
            for c in r.get("choices", []):
                lines.append(
                    f"- {r['model']} `{r['config']}` choice: " + ", ".join(f"{k}={v}" for k, v in c.items())
                )
        lines += ["", "Every run:", "", spread_table(part_rows), ""]
    lines += ["## Targets", "", *target_checks(rows, emulation), ""]
    if not cuda:
        lines.append(
            "Part 3 (GPU) was not run here: no GPU in this session. Run `python bench/pipeline.py "
            "--device cuda` (or `bash bench/gpu_suite.sh`) on a GPU machine."
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--parts",
        default=None,
        help="comma list: 1 (real stage times), 2 (emulated transfers); "
        "default 1,2 on CPU, 1 on CUDA (reported as part 3)",
    )
    parser.add_argument(
        "--plan",
        nargs="+",
        default=None,
        help="MODEL=CONFIG,… (configs: seq, 0, 1, 2, 3, auto; '+m' adds "
        "mitigation); default on CPU: " + " ".join(CPU_PLAN),
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--max-train-batches", type=int, default=None, help="limit_train_batches (default: the whole epoch)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per config (default 3 on CPU, 1 on CUDA)"
    )
    parser.add_argument(
        "--mrr-negatives",
        type=int,
        default=1,
        help="test negatives per event; 1 skips MRR (AP uses one fixed negative)",
    )
    parser.add_argument("--skip-test", action="store_true", help="no test AP (throughput only)")
    parser.add_argument(
        "--emulate-transfer-ms",
        type=parse_latency,
        nargs="+",
        default=None,
        help="part 2 settings, one block each: 'auto' (τ4/2 of part 1's sequential run on stages 2, 3, 5), "
        "'auto23' (τ4/2 on stages 2, 3 only), 'L' (ms on stages 2, 3, 5) or 'L2,L3,L5'; default: auto auto23",
    )
    parser.add_argument("--emulate-model", default="tgn", choices=list(MODELS))
    parser.add_argument("--emulate-configs", default=EMULATED_CONFIGS)
    parser.add_argument("--emulate-batches", type=int, default=60, help="training batches per emulated run")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.05,
        help="before each run wait until other processes use less than this share of the CPU, and redo a "
        "run during which they used more (0: off)",
    )
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="longest wait for a quiet machine, s")
    parser.add_argument("--retries", type=int, default=2, help="redos of a run disturbed by other processes")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--tag", default=None, help="results go to pipeline_<tag>.{json,md} (default: the device)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench/pipeline.py: --device cuda but torch sees no GPU.")
    if args.repeats is None:
        args.repeats = 1 if cuda else 3
    parts = set((args.parts or ("1" if cuda else "1,2")).split(","))
    plan_items = args.plan or (GPU_PLAN if cuda else CPU_PLAN)
    plan = parse_plan(plan_items)
    latencies = args.emulate_transfer_ms or ["auto", "auto23"]
    tag = args.tag or args.device

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_lightning()  # Lightning's hints (few workers, no validation, litlogger) are noise here
    logging.getLogger("lightning_mspipe").setLevel(logging.WARNING)

    machine = machine_info()
    log.info(
        "device %s, %s, %s CPUs, torch %s (%d threads), lightning %s, load %s",
        machine["device"],
        machine["platform"],
        machine["cpu_count"],
        machine["torch"],
        machine["torch_threads"],
        machine["lightning"],
        machine["load_average"],
    )
    events = wikipedia_with_features(args.datasets, args.seed)
    log.info(
        "data: %s: %d events, %d nodes, edge features %s",
        events.name,
        events.num_events,
        events.num_nodes,
        tuple(events.edge_feat.shape),
    )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    real_part = "3" if cuda else "1"

    def show(row: dict[str, Any]) -> None:
        log.info(
            "  %-6s %-7s s=%-13s %8.0f ev/s  AP %s  idle %.3f  eff %.3f  τ(ms) %s  iter %.1f  [%.0fs, load %.2f]",
            row["model"],
            row["config"],
            row["s"],
            row["events_per_s"],
            fmt(row["test_ap"], ".4f"),
            row["idle_share"],
            row["efficiency"],
            " ".join(f"{row[f'tau{j}_ms']:.1f}" for j in range(1, 6)),
            row["iteration_ms"],
            row["epoch_s"] + row.get("test_s", 0.0),
            row["load_1min_before"],
        )

    def warm_up(model_name: str) -> None:
        """An untimed short fit, so the first measured run does not pay one-time costs (allocator, lazy init)."""
        run_row(model_name, Config.parse("seq"), events, args, "warm-up", max_batches=5, test=False)

    def save(final: bool) -> None:
        """Write the results so far (after every model block, so an interrupted run keeps them)."""
        add_ratios(rows)
        emulation = emulation_summary(rows)
        elapsed = time.perf_counter() - started
        config = {
            "data": f"{events.name}: {events.num_events:,} events, {events.num_nodes:,} nodes, edge features "
            f"{EDGE_DIM}-dim float32 randn (seed {args.seed}) in host memory",
            "model": MODEL_ARGS,
            "data_module": {**DATA_ARGS, "mrr_negatives": args.mrr_negatives, "seed": args.seed},
            "epochs": args.epochs,
            "max_train_batches": args.max_train_batches,
            "emulate_batches": args.emulate_batches,
            "repeats": args.repeats,
            "quiet_threshold": args.quiet_threshold,
            "quiet_wait_s": args.quiet_wait,
            "retries": args.retries,
            "plan": plan_items,
            "parts": sorted(parts),
            "device": args.device,
            "memory_store": "pinned host memory" if cuda else "host memory",
            "git": git_state(),
            "command": " ".join(["bench/pipeline.py", *(argv if argv is not None else sys.argv[1:])]),
            "wall_s": elapsed,
            "complete": final,
            "load_average_at_end": os.getloadavg(),
        }
        markdown = render_markdown(rows, emulation, config, cuda)
        if not final:
            markdown = markdown.replace(
                "\n", "\n\n**Partial results: the run is still going or was interrupted.**\n", 1
            )
        paths = write_results(
            f"pipeline_{tag}", {"config": config, "rows": rows, "emulated": emulation}, markdown, args.out
        )
        if final:
            print()
            print(table(rows))
            for e in emulation:
                print(
                    f"EMULATED {e['part']} {e['config']}: speed-up {e['speedup']:.2f}× vs ideal "
                    f"{e['ideal_speedup']:.2f}× ({e['speedup_share_of_ideal']:.0%}); implementation bound "
                    f"{e['implementation_bound_speedup']:.2f}×; efficiency {e['efficiency']:.3f}"
                )
            print("\n".join(target_checks(rows, emulation)))
            print(f"\nwrote {paths[0]} and {paths[1]} ({elapsed / 60:.1f} min)")

    if "1" in parts:
        for model_name, configs in plan:
            log.info(
                "part %s: %s, configs %s, %d round(s)",
                real_part,
                model_name,
                [c.name for c in configs],
                args.repeats,
            )
            warm_up(model_name)
            rows += run_configs(
                model_name,
                configs,
                events,
                args,
                real_part,
                args.repeats,
                show,
                max_batches=args.max_train_batches,
                test=not args.skip_test,
            )
            save(final=False)
    if "2" in parts:
        emulated_configs = [Config.parse(t) for t in args.emulate_configs.split(",")]
        warm_up(args.emulate_model)
        for k, latency in enumerate(latencies, start=1):
            if isinstance(latency, str):
                seq = next(
                    (
                        r
                        for r in rows
                        if r["part"] == real_part
                        and r["model"] == args.emulate_model
                        and r["config"] == "seq"
                    ),
                    None,
                )
                if seq is None:
                    raise SystemExit(
                        f"bench/pipeline.py: --emulate-transfer-ms {latency} needs part 1's sequential row "
                        f"of {args.emulate_model}; run part 1 too or give the latency in ms."
                    )
                ms = max(5.0, 5.0 * round(seq["tau4_ms"] / 2 / 5.0))  # τ2 + τ3 ≈ τ4, rounded to 5 ms
                latency = (ms / 1e3, ms / 1e3, ms / 1e3 if latency == "auto" else 0.0)
            part = f"2.{k}" if len(latencies) > 1 else "2"
            log.info(
                "part %s (EMULATED transfers: +%s ms on stages 2/3/5): %s",
                part,
                "/".join(f"{1e3 * x:g}" for x in latency),
                args.emulate_model,
            )
            rows += run_configs(
                args.emulate_model,
                emulated_configs,
                events,
                args,
                part,
                args.repeats,
                show,
                latency=latency,
                max_batches=args.emulate_batches,
                test=False,
            )
            save(final=False)
    save(final=True)


if __name__ == "__main__":
    main()
