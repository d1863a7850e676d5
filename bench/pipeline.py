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
median events/s. Measured per row: events/s of the training epoch (``PipelineStats``; validation is off
during ``fit``, ``trainer.test`` replays the validation events into memory first), test AP, the bound
``s`` in force, the training stage's idle share, mean stage times τ1…τ5, ``P_model = max(τ1, τ2 + τ3,
τ4, τ5)`` (stages 2 and 3 share the host→device link) and the efficiency ``P_model / iteration time``
(iteration time: mean seconds per batch over the last 50 batches, the window of the stage means).
Pipelined rows take τ from ``trainer.strategy.pipeline.profile``; the sequential row trains on
:class:`~bench.pipeline_runner.SequentialSource` (stages 1–3 timed where they run) with a
:class:`~bench.pipeline_runner.TimedWriter` as the model's memory writer (stage 5); τ4 is the rest of
the iteration, as the pipeline measures it. No library function is patched.

Parts:

1. CPU, real stage times. Refuses to record results when other processes took more than
   ``--refuse-share`` (10%) of the CPU during a kept run: run it alone.
2. CPU, EMULATED transfers on two links (:mod:`bench.pipeline_links`): one host→device link shared
   by stages 2 and 3, a separate device→host link for stage 5, in three regimes sized from the
   compute time τ4 of a sequential calibration run (or ``--tau4-ms``): copy-bound (τ2 + τ3 largest),
   write-bound (τ5 > τ4) and compute-bound (τ4 largest); τ4 comes from part 1's ``seq`` row of
   the model when part 1 ran. Reported per regime: efficiency and the
   speed-up over ``seq`` against ``Στ / P_model``.
3. GPU (``--device cuda``): Trainer(accelerator="gpu"), memory store in pinned host memory.

Run from the repository root, alone on the machine (a long run: use ``nice``)::

    nice -n 5 python bench/pipeline.py                       # parts 1 and 2 on CPU
    python bench/pipeline.py --device cuda --tag gpu_H100     # part 3 (bench/gpu_suite.sh runs this)
    python bench/pipeline.py --quick                          # a smoke run: tiny sizes, records nothing
    python bench/pipeline.py --rerender                       # the .md again from the .json, running nothing

Writes ``bench/results/pipeline_<tag>.json`` and ``.md`` (``--tag`` defaults to the device); the ``.md``
ends with the accuracy-at-staleness table of ``staleness_accuracy_<tag>.json`` when
``bench/staleness_accuracy.py`` recorded one (timing-independent, so it is run separately). The
runs live in ``bench/pipeline_runner.py``, the emulated links in ``bench/pipeline_links.py``, the
report in ``bench/pipeline_report.py``. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DATASETS, RESULTS, machine_info, quiet_lightning, with_machine_header, write_results
from bench.pipeline_links import regimes
from bench.pipeline_report import (
    add_ratios,
    fmt,
    git_state,
    regime_summary,
    render_markdown,
    staleness_section,
    table,
    target_checks,
)
from bench.pipeline_runner import (
    DATA_ARGS,
    EDGE_DIM,
    MODEL_ARGS,
    MODELS,
    Config,
    parse_plan,
    run_configs,
    run_row,
    wikipedia_with_features,
)

# Default plans (model=configs). CPU: TGN in full, JODIE/APAN on the configs that carry the targets.
CPU_PLAN = [
    "tgn=seq,0,1,2,3,auto,1+m,2+m,3+m,auto+m",
    "jodie=seq,0,1,2,auto,2+m,auto+m",
    "apan=seq,0,1,2,auto,2+m,auto+m",
]
GPU_PLAN = ["tgn=seq,0,1,2,3,auto,auto+m", "jodie=seq,0,1,2,auto,auto+m", "apan=seq,0,1,2,auto,auto+m"]
EMULATED_CONFIGS = "seq,0,1,2,auto"
QUICK = {"plan": ["tgn=seq,0,auto"], "max_train_batches": 12, "emulate_batches": 12, "repeats": 1,
         "emulate_configs": "seq,1,auto", "quiet_threshold": 0.0, "retries": 0, "skip_test": True}

log = logging.getLogger("bench.pipeline")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--parts", default=None, help="comma list: 1 (real stage times), 2 (emulated links); "
                        "default 1,2 on CPU, 1 on CUDA (reported as part 3)")
    parser.add_argument("--plan", nargs="+", default=None, help="MODEL=CONFIG,… (configs: seq, 0, 1, 2, 3, auto; "
                        "'+m' adds mitigation); default on CPU: " + " ".join(CPU_PLAN))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-train-batches", type=int, default=None, help="limit_train_batches (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per config (default 3 on CPU, 1 on CUDA)")
    parser.add_argument("--mrr-negatives", type=int, default=1,
                        help="test negatives per event; 1 skips MRR (AP uses one fixed negative)")
    parser.add_argument("--skip-test", action="store_true", help="no test AP (throughput only)")
    parser.add_argument("--tau4-ms", type=float, default=None,
                        help="part 2: size the regimes from this τ4 instead of a sequential calibration run")
    parser.add_argument("--emulate-model", default="tgn", choices=list(MODELS))
    parser.add_argument("--emulate-configs", default=EMULATED_CONFIGS)
    parser.add_argument("--emulate-batches", type=int, default=60, help="training batches per emulated run")
    parser.add_argument("--quiet-threshold", type=float, default=0.05,
                        help="before each run wait until other processes use less than this share of the CPU, "
                        "and redo a run during which they used more (0: off)")
    parser.add_argument("--refuse-share", type=float, default=0.10,
                        help="part 1 records nothing when other processes took more than this CPU share in a kept run")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="longest wait for a quiet machine, s")
    parser.add_argument("--retries", type=int, default=2, help="redos of a run disturbed by other processes")
    parser.add_argument("--rerender", action="store_true",
                        help="run nothing: rewrite pipeline_<tag>.md from its recorded .json (after a report change)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tgn=seq,0,auto, 12 batches, 1 repeat, no test; prints, records nothing")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None, help="results go to pipeline_<tag>.{json,md} (default: the device)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    cuda = args.device == "cuda"
    if cuda and not args.rerender and not torch.cuda.is_available():
        raise SystemExit("bench/pipeline.py: --device cuda but torch sees no GPU.")
    if args.repeats is None:
        args.repeats = 1 if cuda else 3
    return args


def show(row: dict[str, Any]) -> None:
    log.info(
        "  %-6s %-7s %-13s s=%-13s %8.0f ev/s  AP %s  idle %.3f  eff %.3f  τ(ms) %s  P %.1f  iter %.1f  [%.0fs]",
        row["model"], row["config"], row["regime"] or "", row["s"], row["events_per_s"], fmt(row["test_ap"], ".4f"),
        row["idle_share"], row["efficiency"], " ".join(f"{row[f'tau{j}_ms']:.1f}" for j in range(1, 6)),
        row["period_ms"], row["iteration_ms"], row["epoch_s"] + row.get("test_s", 0.0),
    )


def disturbed_runs(rows: list[dict[str, Any]], share: float) -> list[str]:
    """Kept runs of part 1 (CPU, real stage times) during which other processes took more than ``share`` of the CPU."""
    return [f"{r['model']} {r['config']} ({r['cotenant_share']:.0%})" for r in rows
            if r["part"] == "1" and (r.get("cotenant_share") or 0.0) > share]


def measured_tau4(rows: list[dict[str, Any]], part: str, model: str) -> float | None:
    """τ4 (seconds) of ``model``'s sequential row in ``part``, if it ran."""
    seq = next((r for r in rows if (r["part"], r["model"], r["config"]) == (part, model, "seq")), None)
    return None if seq is None else seq["tau4_ms"] / 1e3


def rerender(json_path: Path, cuda: bool, staleness: list[str] | None) -> None:
    """Rewrite the ``.md`` beside ``json_path`` from its recorded rows with the current report code."""
    if not json_path.exists():
        raise SystemExit(f"bench/pipeline.py --rerender: {json_path} does not exist; run the benchmark first.")
    recorded = json.loads(json_path.read_text())
    rows = recorded["rows"]
    add_ratios(rows)
    markdown = render_markdown(rows, regime_summary(rows), recorded["config"], cuda, staleness)
    json_path.with_suffix(".md").write_text(with_machine_header(markdown, recorded["machine"]))
    print(f"rewrote {json_path.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = args.device == "cuda"
    parts = set((args.parts or ("1" if cuda else "1,2")).split(","))
    plan_items = args.plan or (GPU_PLAN if cuda else CPU_PLAN)
    plan = parse_plan(plan_items)
    tag = args.tag or args.device

    staleness_name = f"staleness_accuracy_{tag}"
    staleness_file = args.out / f"{staleness_name}.json"
    staleness = staleness_section(json.loads(staleness_file.read_text()), staleness_name) \
        if staleness_file.exists() else None
    if args.rerender:
        rerender(args.out / f"pipeline_{tag}.json", cuda, staleness)
        return

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_lightning()  # Lightning's hints (few workers, no validation, litlogger) are noise here
    logging.getLogger("lightning_mspipe").setLevel(logging.WARNING)
    machine = machine_info()
    log.info("device %s, %s, %s CPUs, torch %s (%d threads), lightning %s, load %s", machine["device"],
             machine["platform"], machine["cpu_count"], machine["torch"], machine["torch_threads"],
             machine["lightning"], machine["load_average"])
    events = wikipedia_with_features(args.datasets, args.seed)
    log.info("data: %s: %d events, %d nodes, edge features %s", events.name, events.num_events, events.num_nodes,
             tuple(events.edge_feat.shape))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    real_part = "3" if cuda else "1"

    def warm_up(model_name: str) -> float:
        """An untimed short sequential fit (one-time costs: allocator, lazy init); returns its τ4 in seconds."""
        row = run_row(model_name, Config.parse("seq"), events, args, "warm-up", max_batches=8, test=False)
        return row["tau4_ms"] / 1e3

    def save(final: bool) -> None:
        """Write the results so far (after every block, so an interrupted run keeps them); --quick prints only."""
        add_ratios(rows)
        emulation = regime_summary(rows)
        elapsed = time.perf_counter() - started
        config = {
            "data": f"{events.name}: {events.num_events:,} events, {events.num_nodes:,} nodes, edge features "
            f"{EDGE_DIM}-dim float32 randn (seed {args.seed}) in host memory",
            "model": MODEL_ARGS, "data_module": {**DATA_ARGS, "mrr_negatives": args.mrr_negatives, "seed": args.seed},
            "epochs": args.epochs, "max_train_batches": args.max_train_batches,
            "emulate_batches": args.emulate_batches, "repeats": args.repeats,
            "quiet_threshold": args.quiet_threshold, "refuse_share": args.refuse_share,
            "quiet_wait_s": args.quiet_wait, "retries": args.retries, "plan": plan_items, "parts": sorted(parts),
            "device": args.device, "memory_store": "pinned host memory" if cuda else "host memory",
            "git": git_state(), "command": " ".join(["bench/pipeline.py", *(argv if argv is not None else sys.argv[1:])]),
            "wall_s": elapsed, "complete": final, "load_average_at_end": os.getloadavg(),
        }
        if final:
            print()
            print(table(rows))
            print("\n".join(target_checks(rows, emulation)))
        disturbed = disturbed_runs(rows, args.refuse_share)
        if args.quick or disturbed:
            if disturbed:
                log.warning("NOT RECORDED: other processes took more than %.0f%% of the CPU during %s. "
                            "Run the benchmark alone on the machine.", 100 * args.refuse_share, ", ".join(disturbed))
            return
        markdown = render_markdown(rows, emulation, config, cuda, staleness)
        if not final:
            markdown = markdown.replace("\n", "\n\n**Partial results: the run is still going or was interrupted.**\n", 1)
        paths = write_results(f"pipeline_{tag}", {"config": config, "rows": rows, "emulated": emulation}, markdown,
                              args.out)
        if final:
            print(f"\nwrote {paths[0]} and {paths[1]} ({elapsed / 60:.1f} min)")

    if "1" in parts:
        for model_name, configs in plan:
            log.info("part %s: %s, configs %s, %d round(s)", real_part, model_name, [c.name for c in configs],
                     args.repeats)
            warm_up(model_name)
            rows += run_configs(model_name, configs, events, args, real_part, args.repeats, show,
                                max_batches=args.max_train_batches, test=not args.skip_test)
            save(final=False)
    if "2" in parts:
        emulated_configs = [Config.parse(t) for t in args.emulate_configs.split(",")]
        tau4 = args.tau4_ms / 1e3 if args.tau4_ms is not None else measured_tau4(rows, real_part, args.emulate_model)
        if tau4 is None:  # no part 1 row: a sequential calibration run
            warm_up(args.emulate_model)
            tau4 = run_row(args.emulate_model, Config.parse("seq"), events, args, "calibration",
                           max_batches=args.emulate_batches, test=False)["tau4_ms"] / 1e3
        for k, regime in enumerate(regimes(tau4), start=1):
            part = f"2.{k}"
            log.info("part %s (EMULATED links, %s: +%s ms on stages 2/3/5): %s", part, regime.name,
                     "/".join(f"{x:.1f}" for x in regime.latencies_ms()), args.emulate_model)
            rows += run_configs(args.emulate_model, emulated_configs, events, args, part, args.repeats, show,
                                regime=regime, max_batches=args.emulate_batches, test=False)
            save(final=False)
    save(final=True)


if __name__ == "__main__":
    main()
