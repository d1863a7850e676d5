"""Benchmark: does TGN's per-batch work and memory bookkeeping stay O(batch) as the graph grows to 10^6 nodes?

For each graph size N (default 10^4, 10^5, 10^6 nodes), in a FRESH subprocess (so peak-memory
figures do not mix sizes), on a seeded synthetic stream of ``--events`` events
(``synthetic_events(N, E, seed=0)``), TGN with default dims (100), batch 600, 10 recent neighbours,
one training epoch through ``lightning.Trainer``, then ``trainer.validate``. Measured:

- **train batch**: median wall time of one training batch (``on_train_batch_start`` → ``_end``,
  i.e. step, backward, optimizer and the memory write), first 5 batches excluded as warm-up;
- **peak RSS**: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's high-water resident
  set, sampled after imports, after building data + model, and after training; we report the
  increase over the after-import value. It counts everything the process touched (event tensors,
  the T-CSR graph, the memory store, activations, allocator caches), not only torch tensors
  (tracemalloc misses torch's allocations, and stock CPU torch exposes no allocator statistics).
  The memory store's own size (sum of its buffers) is listed beside it;
- **end-of-epoch reset**: ``model.phases.start_training_epoch()`` (→ ``MemoryStore.reset()``), which
  zeroes only the rows written since the last reset, timed with the store holding exactly the
  writes of the epoch (replayed from a recording before each repeat);
- **train → eval switch**: ``model.phases.start_validation(False)`` at the end of training (opens
  a journal frame), the extra cost the journal adds to the validation writes (pre-images), and
  the rewind when validation starts again (``start_validation(False)`` rolls the frame back);
- **naive references**: zeroing every store buffer in full (``buf.zero_()``) for the reset, and a
  full snapshot (``buf.clone()``) plus full restore (``buf.copy_``) for the switch: both O(N).

Times are medians over ``--repeats`` repeats. The machine is shared: before each size the script
waits (at most ``--max-wait`` s) until other processes use less than ``--quiet-below`` of the CPU,
and records the share they used while the size ran (``CoTenantMeter``; a busy neighbour slows a
torch step by up to 10x on 2 cores). Run from the repository root (a few minutes)::

    nice -n 10 python bench/memory_scale.py [--sizes 10000 100000 1000000] [--events 60000]

Prints device and versions; writes ``bench/results/memory_scale_cpu.json`` and ``.md``. Not
collected by pytest (``testpaths``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import CoTenantMeter, bench_trainer, quiet_lightning, wait_for_quiet, write_results  # noqa: E402
from lightning_mspipe.data.datamodule import TemporalDataModule  # noqa: E402
from lightning_mspipe.data.synthetic import synthetic_events  # noqa: E402
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite  # noqa: E402
from lightning_mspipe.models import TGN  # noqa: E402

BATCH_SIZE = 600
WARMUP_BATCHES = 5


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_ms(fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> float:
    """Median wall time of ``fn`` in milliseconds; ``setup`` runs untimed before each call."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


class BatchTimer(L.Callback):
    """Wall time of every training batch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.times.append(time.perf_counter() - self._start)


def record_writes(store: MemoryStore) -> list[MemoryWrite]:
    """Make ``store.scatter`` keep every write it applies (an instance attribute; the class is untouched)."""
    log: list[MemoryWrite] = []
    scatter = store.scatter

    def recording(write: MemoryWrite) -> int:
        log.append(write)
        return scatter(write)

    store.scatter = recording  # type: ignore[method-assign]
    return log


def measure_size(num_nodes: int, num_events: int, repeats: int) -> dict[str, Any]:
    """Everything for one graph size; runs in its own process (see ``--child``)."""
    quiet_lightning()
    meter = CoTenantMeter()  # in the child, so that its own CPU time is not counted as another process's
    rss = {"after_import": peak_rss_mib()}
    events = synthetic_events(num_nodes, num_events, seed=0)
    dm = TemporalDataModule(events=events, batch_size=BATCH_SIZE, num_neighbors=10, mrr_negatives=1, seed=0)
    L.seed_everything(0, verbose=False)
    model = TGN(num_nodes=num_nodes, edge_dim=dm.edge_dim)  # default dims: memory, time, embedding 100
    store, phases = model.memory, model.phases
    buffers = [buf for name, buf in store.named_buffers() if name != "version"]
    store_mib = sum(buf.numel() * buf.element_size() for buf in buffers) / 2**20
    rss["after_setup"] = peak_rss_mib()

    writes = record_writes(store)
    timer = BatchTimer()
    trainer = bench_trainer(max_epochs=1, limit_val_batches=1.0, callbacks=[timer])
    trainer.fit(model, dm)  # validation runs at the end of the epoch; its writes are recorded too
    rss["after_train"] = peak_rss_mib()
    num_train = len(timer.times)
    train_writes, val_writes = writes[:num_train], writes[num_train:]
    del store.scatter  # back to the class method
    rows_train = int(torch.cat([torch.cat([w.nodes, w.mail_nodes]) for w in train_writes]).unique().numel())
    rows_val = int(torch.cat([torch.cat([w.nodes, w.mail_nodes]) for w in val_writes]).unique().numel())

    def end_of_training() -> None:  # memory exactly as after the training epoch, no journal frames
        store.reset()
        for w in train_writes:
            store.scatter(w)
        phases.position = "train"

    def apply(ws: list[MemoryWrite]) -> None:
        for w in ws:
            store.scatter(w)

    def naive_zero() -> None:
        for buf in buffers:
            buf.zero_()
        store.version.zero_()

    with torch.no_grad():
        reset_ms = median_ms(phases.start_training_epoch, repeats, setup=end_of_training)
        naive_zero_ms = median_ms(naive_zero, repeats, setup=end_of_training)
        open_ms = median_ms(lambda: phases.start_validation(False), repeats, setup=end_of_training)
        val_plain_ms = median_ms(lambda: apply(val_writes), repeats, setup=end_of_training)

        def opened() -> None:
            end_of_training()
            phases.start_validation(False)

        val_journal_ms = median_ms(lambda: apply(val_writes), repeats, setup=opened)

        def after_validation() -> None:
            opened()
            apply(val_writes)

        rewind_ms = median_ms(lambda: phases.start_validation(False), repeats, setup=after_validation)
        snapshot: list[torch.Tensor] = []
        snapshot_ms = median_ms(lambda: snapshot.__setitem__(slice(None), [b.clone() for b in buffers]), repeats,
                                setup=end_of_training)

        def restore() -> None:
            for buf, saved in zip(buffers, snapshot):
                buf.copy_(saved)

        restore_ms = median_ms(restore, repeats, setup=lambda: apply(val_writes))
    rss["after_naive_snapshot"] = peak_rss_mib()
    steady = timer.times[WARMUP_BATCHES:] or timer.times
    return {
        "num_nodes": num_nodes, "num_events": num_events, "split": dm.split_sizes(),
        "train_batches": num_train, "val_batches": len(val_writes),
        "train_batch_ms_median": 1e3 * statistics.median(steady),
        "train_batch_ms_p90": 1e3 * statistics.quantiles(steady, n=10)[-1] if len(steady) > 1 else None,
        "store_mib": store_mib, "peak_rss_mib": rss,
        "peak_rss_increase_train_mib": rss["after_train"] - rss["after_import"],
        "rows_written_train_epoch": rows_train, "rows_written_validation": rows_val,
        "reset_ms": reset_ms, "naive_zero_ms": naive_zero_ms,
        "switch_open_ms": open_ms, "val_writes_ms": val_plain_ms, "val_writes_with_journal_ms": val_journal_ms,
        "rewind_ms": rewind_ms, "naive_snapshot_ms": snapshot_ms, "naive_restore_ms": restore_ms,
        "repeats": repeats, "co_tenant_share": meter.share(),
    }


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# TGN memory scaling: batch time, peak memory, reset and train→eval switch vs graph size (CPU)",
        "",
        f"Synthetic streams `synthetic_events(N, {args.events:,}, seed=0)`, TGN (dims 100), batch {BATCH_SIZE}, "
        "10 recent neighbours, 1 training epoch + validation via `lightning.Trainer`, each size in a fresh subprocess. "
        f"Times: medians over {args.repeats} repeats (train batch: median over the epoch's batches after "
        f"{WARMUP_BATCHES} warm-up ones). Peak RSS: increase of `getrusage(RUSAGE_SELF).ru_maxrss` from after the "
        "imports to after training (whole process: events, graph, store, activations, allocator caches); *store* is the "
        "sum of the memory store's buffers. The store's state on each repeat is exactly that of the end of the "
        "training epoch (its recorded writes replayed untimed). *others' CPU*: share of the machine's CPU time used by "
        "other processes while that size ran (`CoTenantMeter`; each size waits for a quiet machine first).",
        "",
        "| N | store MiB | peak RSS +MiB | train batch ms (p90) | rows written (epoch / val) | reset ms | naive zero ms "
        "| open eval frame ms | val writes ms (+journal) | rewind ms | naive snapshot + restore ms | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p90 = f" ({r['train_batch_ms_p90']:.0f})" if r["train_batch_ms_p90"] is not None else ""
        share = "n/a" if r.get("co_tenant_share") is None else f"{100 * r['co_tenant_share']:.0f}%"
        lines.append(
            f"| {r['num_nodes']:,} | {r['store_mib']:.0f} | {r['peak_rss_increase_train_mib']:.0f} | "
            f"{r['train_batch_ms_median']:.0f}{p90} | {r['rows_written_train_epoch']:,} / {r['rows_written_validation']:,} | "
            f"{r['reset_ms']:.2f} | {r['naive_zero_ms']:.2f} | {r['switch_open_ms']:.3f} | "
            f"{r['val_writes_ms']:.1f} (+{r['val_writes_with_journal_ms'] - r['val_writes_ms']:.1f}) | "
            f"{r['rewind_ms']:.2f} | {r['naive_snapshot_ms']:.1f} + {r['naive_restore_ms']:.1f} | {share} |"
        )
    lines += [
        "",
        "Reading: *reset* (`phases.start_training_epoch()` → `MemoryStore.reset()`) zeroes only the rows written since "
        "the last reset, so it costs O(rows written in the epoch) — bounded by the epoch's events, not by N; the naive "
        "full `zero_()` of every buffer is O(N). *open eval frame* (`phases.start_validation(False)` at the end of "
        "training) only opens a journal frame: O(1). While the frame is open each write also saves its rows' "
        "pre-images: O(batch) per write (the +journal column, over the whole validation). *rewind* (a second "
        "`start_validation(False)`) rolls the validation frame back: O(rows validation wrote). The naive way to make "
        "evaluation undoable, a full snapshot of the store and a full restore, is O(N) each.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quiet-below", type=float, default=0.15,
                        help="before each size, wait until other processes use less than this share of the CPU")
    parser.add_argument("--max-wait", type=float, default=300.0, help="give up waiting for a quiet machine after this")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, JSON out
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure_size(args.child, args.events, args.repeats)), flush=True)
        return
    import lightning

    print(f"device cpu, {torch.get_num_threads()} threads, torch {torch.__version__}, lightning {lightning.__version__}",
          flush=True)
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--events", str(args.events), "--repeats", str(args.repeats)]
        waited = wait_for_quiet(args.quiet_below, max_wait=args.max_wait)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench/memory_scale.py: the run for N={size:,} failed:\n{proc.stderr[-4000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1]) | {"waited_s": waited}
        rows.append(row)
        print(f"N={size:,}: train batch {row['train_batch_ms_median']:.0f} ms, peak RSS +{row['peak_rss_increase_train_mib']:.0f} "
              f"MiB (store {row['store_mib']:.0f} MiB), reset {row['reset_ms']:.2f} ms vs naive {row['naive_zero_ms']:.2f} ms, "
              f"rewind {row['rewind_ms']:.2f} ms vs naive {row['naive_snapshot_ms'] + row['naive_restore_ms']:.1f} ms",
              flush=True)
    text = markdown(args, rows)
    config = {k: v for k, v in vars(args).items() if k not in ("child", "out")} | {"batch_size": BATCH_SIZE}
    write_results("memory_scale_cpu", {"config": config, "rows": rows}, text, args.out)
    print(text)


if __name__ == "__main__":
    main()
