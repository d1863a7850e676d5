"""Shared helpers of the benchmark scripts: machine description, data paths and result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DATASETS = Path(os.environ.get("MSPIPE_DATASETS", REPO.parent / "shared" / "datasets"))


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"unknown"`` elsewhere): speed ratios differ between CPUs."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, load average, torch/lightning versions, device, and the date (UTC)."""
    import lightning

    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    return info


def write_results(name: str, payload: dict[str, Any], markdown: str, out: Path | None = None) -> tuple[Path, Path]:
    """Write ``{name}.json`` (payload plus machine info) and ``{name}.md`` under ``out`` (default bench/results)."""
    out = Path(out) if out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **payload}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(with_machine_header(markdown, payload["machine"]))
    return json_path, md_path


def with_machine_header(markdown: str, machine: dict[str, Any]) -> str:
    """``markdown`` with a line on the machine (:func:`machine_info`) after its title."""
    header = (
        f"Measured {machine['date']} on {machine['device']} ({machine['platform']}, {machine.get('cpu_model', '?')}, "
        f"{machine['cpu_count']} CPUs, "
        f"load average {', '.join(f'{x:.2f}' for x in machine['load_average'])}), torch {machine['torch']}, "
        f"lightning {machine['lightning']}.\n\n"
    )
    return markdown.split("\n", 1)[0] + "\n\n" + header + markdown.split("\n", 1)[1].lstrip("\n")


# ---------------------------------------------------------------------------------------------- real data sets
# name -> (file under DATASETS, load_events options, what our copy lacks against the published setting)
REAL_DATASETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "wikipedia": (
        "wikipedia/wikipedia_edges.csv.gz", {},
        "no edge features: the original's 172-dim LIWC edge features are not in our copy",
    ),
    "uci": (
        "uci/ml_uci.csv.gz", {"edge_features": False, "node_features": False},
        "the ml_ file's 100-dim edge/node features are all zeros; dropped (edge_features=False)",
    ),
    "enron": (
        "enron/ml_enron.csv.gz", {"edge_features": False, "node_features": False},
        "the ml_ file's 32-dim edge/node features are all zeros; dropped (edge_features=False)",
    ),
    "uslegis": (
        "uslegis/LegisEdgelist.txt.gz", {"format": "edgelist", "src": 1, "dst": 2, "time": 0, "remap": True},
        "source edge list; the co-sponsorship weight (1…314, raw) is the 1-dim edge feature, as in DyGLib",
    ),
}


def load_dataset(name: str, max_events: int | None = None):  # -> EventStream
    """Load one of :data:`REAL_DATASETS`, optionally only its first ``max_events`` events (for quick runs)."""
    from lightning_mspipe.data import EventStream, load_events

    if name not in REAL_DATASETS:
        raise SystemExit(f"bench: unknown data set {name!r}; choose from {sorted(REAL_DATASETS)}.")
    path, options, _ = REAL_DATASETS[name]
    if not (DATASETS / path).exists():
        raise SystemExit(f"bench: {name} not found at {DATASETS / path}; set MSPIPE_DATASETS to the datasets folder.")
    events = load_events(DATASETS / path, **options)
    if max_events is None or max_events >= events.num_events:
        return events
    cut = slice(0, max_events)
    return EventStream(
        src=events.src[cut], dst=events.dst[cut], t=events.t[cut],
        edge_feat=None if events.edge_feat is None else events.edge_feat[cut],
        label=None if events.label is None else events.label[cut],
        name=f"{events.name}[:{max_events}]",
    )


# ---------------------------------------------------------------------------------------------- helpers
def quiet_lightning() -> None:
    """Silence Lightning's info logs and warnings (small epochs, no logger) so the benchmark output stays readable."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def bench_trainer(**kwargs: Any):  # -> lightning.Trainer
    """A ``lightning.Trainer`` without logger, checkpoints, progress bar or model summary (``kwargs`` override)."""
    import lightning as L

    options: dict[str, Any] = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                   enable_model_summary=False, num_sanity_val_steps=0)
    options.update(kwargs)
    return L.Trainer(**options)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    import statistics

    if not values:
        raise ValueError("mean_std: no values.")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


class CoTenantMeter:
    """Share of the machine's CPU time used by other processes since construction (Linux ``/proc``).

    On a small shared machine another job's threads oversubscribe the cores; a torch step with
    several OpenMP threads then slows down by an order of magnitude (measured by bench/pipeline.py
    on 2 cores: a TGN step went from ~60 ms to ~1.4 s while a second torch process ran), so a
    benchmark run should know whether it ran alone. ``share()`` is ``None`` where ``/proc`` is missing.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int] | None:
        try:
            with open("/proc/stat") as f:
                values = [int(x) for x in f.readline().split()[1:9]]  # user … steal (guest is inside user)
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        busy = sum(values) - values[3] - values[4]  # all but idle and iowait
        return busy, sum(values), int(fields[11]) + int(fields[12])  # utime + stime of every thread of ours

    def share(self) -> float | None:
        """Other processes' CPU time / all CPU time (busy or idle) since construction."""
        end = self._read()
        if self._start is None or end is None:
            return None
        busy, total, mine = (b - a for a, b in zip(self._start, end))
        return max(busy - mine, 0) / total if total > 0 else 0.0


def wait_for_quiet(threshold: float, max_wait: float, sample: float = 2.0) -> float:
    """Wait until other processes use less than ``threshold`` of the CPU over ``sample`` seconds.

    Returns:
        Seconds waited (at most about ``max_wait``; then it gives up and returns).
    """
    started = time.perf_counter()
    while True:
        meter = CoTenantMeter()
        time.sleep(sample)
        share = meter.share()
        if share is None or share < threshold or time.perf_counter() - started >= max_wait:
            return time.perf_counter() - started


def run_in_processes(fn: Callable[[dict[str, Any]], dict[str, Any]], jobs: list[dict[str, Any]],
                     processes: int) -> Iterator[dict[str, Any]]:
    """Run ``fn(job)`` for every job in ``processes`` spawned workers; yield results as they finish.

    Each worker gets ``cpu_count // processes`` torch threads. Workers are terminated when the
    caller stops iterating, raises, or the process gets SIGTERM (``timeout`` in a script), so no
    orphan keeps running or holds the caller's output pipe open.
    """
    import multiprocessing
    import signal

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)
    threads = max(1, multiprocessing.cpu_count() // processes)
    pool = multiprocessing.get_context("spawn").Pool(processes, initializer=torch.set_num_threads, initargs=(threads,))
    try:
        yield from pool.imap_unordered(fn, jobs)
    finally:
        pool.terminate()
        pool.join()
        signal.signal(signal.SIGTERM, previous)


def epoch_curves():  # -> lightning.Callback
    """A callback that records, per training epoch, its wall time (``times``), mean training loss
    (``loss``) and the validation AP after it (``val_ap``)."""
    import lightning as L

    class EpochCurves(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.loss: list[float] = []
            self.val_ap: list[float] = []
            self._start, self._loss_sum, self._batches = 0.0, 0.0, 0

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self._start, self._loss_sum, self._batches = time.perf_counter(), 0.0, 0

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else None  # EdgeBank has none
            if loss is not None:
                self._loss_sum += float(loss)
                self._batches += 1

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.times.append(time.perf_counter() - self._start)
            if self._batches:
                self.loss.append(self._loss_sum / self._batches)

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking and "val/ap" in trainer.callback_metrics:
                self.val_ap.append(float(trainer.callback_metrics["val/ap"]))

    return EpochCurves()
