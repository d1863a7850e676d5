"""MSPipeDDPStrategy scaling: a functional CPU run (1 and 2 processes) and a stage-time projection to 8 and 16 GPUs.

Part 1 trains TGN on the built-in synthetic stream under ``torchrun`` with 1 and 2 CPU processes
(gloo) and reports events/s and the bytes each rank all-gathers per step for the memory
protocol. It is a functional check: on a 2-core machine shared with other work, 2 processes
cannot show a speed-up.

Part 2 projects scaling efficiency to 8 GPUs (one node, NVLink) and 16 GPUs (two nodes, 100 Gb/s
Ethernet between them) from single-GPU stage times (``--stage-times``: a ``bench/pipeline.py``
result with per-stage times) and a stated interconnect model. Weak scaling, as MSPipe trains:
each GPU keeps a local batch ``b`` (global batch ``W·b``).

    python bench/scaling.py                       # both parts, writes bench/results/scaling_cpu.{md,json}
    python bench/scaling.py --skip-run            # the projection only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, bench_trainer, load_dataset, quiet_lightning, write_results

from lightning_mspipe.pipeline import StageTimes, auto_staleness

STAGE_TIMES = RESULTS / "pipeline_gpu_NVIDIA_H200.json"


# ---------------------------------------------------------------------------------------------- part 1: CPU run
def worker(out: Path, events: int, batch_size: int, epochs: int) -> None:
    """One rank under torchrun: train TGN with MSPipeDDPStrategy(max_staleness=0); rank 0 writes ``out``."""
    import torch

    from lightning_mspipe import TGN, MSPipeDDPStrategy, PipelineStats, TemporalDataModule

    quiet_lightning()
    torch.manual_seed(0)
    dm = TemporalDataModule(batch_size=batch_size, synthetic_events=events)
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim)
    stats = PipelineStats()
    strategy = MSPipeDDPStrategy(max_staleness=0)
    trainer = bench_trainer(accelerator="cpu", devices=int(os.environ["LOCAL_WORLD_SIZE"]), strategy=strategy,
                            max_epochs=epochs, limit_val_batches=0, callbacks=[stats])
    trainer.fit(model, dm)
    sync = strategy.memory_sync
    if trainer.global_rank == 0:
        last = stats.epochs[-1]  # the last epoch: warm
        out.write_text(json.dumps({
            "processes": trainer.world_size,
            "global_batch": batch_size,
            "train_events": dm.split_sizes()["train"],
            "epoch_s": last["epoch_s"],
            "events_per_s": dm.split_sizes()["train"] / last["epoch_s"],
            "steps": len(dm.train_dataloader()) * epochs,
            "bytes_gathered_per_step": None if sync is None or not sync.exchanges else sync.bytes_total / sync.exchanges,
            "write_bytes_per_rank_per_step": None if sync is None or not sync.exchanges
            else sync.bytes_total / sync.exchanges / trainer.world_size,
        }))


def run_processes(processes: int, events: int, batch_size: int, epochs: int, timeout: float) -> dict[str, Any]:
    """Run :func:`worker` under ``torchrun --nproc_per_node processes`` and return rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   __file__, "--worker", str(out), "--events", str(events), "--batch-size", str(batch_size),
                   "--epochs", str(epochs)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one intra-op thread per process: no oversubscription
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench/scaling.py: the {processes}-process run failed:\n{done.stderr[-4000:]}")
        return {**json.loads(out.read_text()), "wall_s": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------- part 2: model
@dataclass
class Link:
    """A collective's bandwidth (bytes/s, achievable bus bandwidth) and per-step latency (s)."""

    name: str
    bandwidth: float
    latency: float


NVLINK = Link("NVLink 4 (H200, NVSwitch): 450 GB/s per direction, 80% achievable", 0.8 * 450e9, 5e-6)
ETHERNET_100G = Link("100 Gb/s Ethernet between nodes: 12.5 GB/s, 80% achievable", 0.8 * 12.5e9, 20e-6)
GPUS_PER_NODE = 8


def all_reduce_seconds(nbytes: float, world: int) -> float:
    """Ring all-reduce inside a node (NVLink), plus the inter-node part through one NIC per node (hierarchical)."""
    local = min(world, GPUS_PER_NODE)
    seconds = 2 * (local - 1) / local * nbytes / NVLINK.bandwidth + 2 * (local - 1) * NVLINK.latency
    nodes = math.ceil(world / GPUS_PER_NODE)
    if nodes > 1:
        seconds += 2 * (nodes - 1) / nodes * nbytes / ETHERNET_100G.bandwidth + 2 * (nodes - 1) * ETHERNET_100G.latency
    return seconds


def all_gather_seconds(per_rank: float, world: int) -> float:
    """All-gather of ``per_rank`` bytes: each rank receives the node's over NVLink and the other nodes' over its NIC."""
    local = min(world, GPUS_PER_NODE)
    seconds = (local - 1) * per_rank / NVLINK.bandwidth + (local - 1) * NVLINK.latency
    if world > local:
        seconds += (world - local) * per_rank / ETHERNET_100G.bandwidth + 2 * ETHERNET_100G.latency
    return seconds


def stage_times(path: Path, model: str, config: str) -> dict[str, float]:
    """τ1…τ5 (seconds) and the local batch of one row of a ``bench/pipeline.py`` result."""
    result = json.loads(path.read_text())
    (row,) = [r for r in result["rows"] if r["model"] == model and r["config"] == config]
    times = {f"tau{j}": row[f"tau{j}_ms"] / 1e3 for j in range(1, 6)}
    return {**times, "batch": result["config"]["data_module"]["batch_size"], "model_config": result["config"]["model"],
            "data": result["config"]["data"]}


def unique_endpoints(batch: int, worlds: list[int]) -> dict[int, float]:
    """Mean number of distinct endpoints in a global batch of ``W·batch`` Wikipedia events (the rows a merged write
    touches), for each ``W``; stage 5's time is assumed proportional to it."""
    import torch

    events = load_dataset("wikipedia")
    rows = {}
    for world in worlds:
        size = world * batch
        batches = events.num_events // size
        ends = torch.stack([events.src[: batches * size], events.dst[: batches * size]], 1).view(batches, -1)
        rows[world] = float(sum(ends[i].unique().numel() for i in range(batches)) / batches)
    return rows


def write_bytes(batch: int, memory_dim: int, edge_dim: int) -> float:
    """Upper bound of one rank's packed write for ``batch`` events: ``2b`` memory rows and ``2b`` mails (float32)."""
    row = 8 + 4 * memory_dim + 8  # node id, memory, last update
    mail = 8 + 4 * (2 * memory_dim + edge_dim) + 8 + 1  # node id, mail, mail time, own flag
    return 2 * batch * (row + mail)


def project(times: dict[str, float], parameter_bytes: int, rows: dict[int, float], worlds: list[int]) -> list[dict]:
    """Per-iteration period and efficiency for each world size (see docs/distributed.md for the model)."""
    model = times["model_config"]
    payload = write_bytes(times["batch"], model["memory_dim"], 172)
    one = max(times["tau1"], times["tau2"] + times["tau3"], times["tau4"], times["tau5"])
    out = []
    for world in worlds:
        train = times["tau4"] + all_reduce_seconds(parameter_bytes, world)  # not overlapped with backward: worst case
        write = times["tau5"] * rows[world] / rows[1] + all_gather_seconds(payload, world)
        period = max(times["tau1"], times["tau2"] + times["tau3"], train, write)
        lanes = StageTimes(times["tau1"], times["tau2"], times["tau3"], train, write)
        out.append({
            "gpus": world, "nodes": math.ceil(world / GPUS_PER_NODE), "global_batch": world * times["batch"],
            "all_reduce_ms": 1e3 * all_reduce_seconds(parameter_bytes, world),
            "all_gather_ms": 1e3 * all_gather_seconds(payload, world), "write_ms": 1e3 * write,
            "train_ms": 1e3 * train, "period_ms": 1e3 * period, "bottleneck": "train" if period == train else
            ("write" if period == write else "fetch"), "efficiency": one / period,
            "auto_staleness": auto_staleness(lanes, maximum=8),
        })
    return out


def parameter_bytes(model_config: dict[str, Any]) -> int:
    """Bytes of TGN's parameters with the benchmark's dims and 172-dim edge features (what DDP all-reduces)."""
    from lightning_mspipe import TGN

    model = TGN(num_nodes=9227, edge_dim=172, memory_dim=model_config["memory_dim"],
                time_dim=model_config["time_dim"], embedding_dim=model_config["embedding_dim"])
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- report
def markdown(runs: list[dict], times: dict[str, Any], source: Path, params: int, rows: dict[int, float],
             projection: list[dict], command: str) -> str:
    lines = ["# MSPipeDDPStrategy: CPU functional run and projected GPU scaling", "", f"Command: `{command}`.", ""]
    if runs:
        lines += [
            "## Part 1: CPU, 1 and 2 processes (functional check)", "",
            ("TGN (dims 100) on the built-in synthetic stream, `MSPipeDDPStrategy(max_staleness=0)` under `torchrun`, "
             f"gloo, one intra-op thread per process; {runs[0]['train_events']:,} training events, global batch "
             f"{runs[0]['global_batch']}; events/s of the last training epoch (rank 0's clock). This machine has 2 "
             "cores shared with other agents' work, so timings are noisy and say nothing about scaling on GPUs (the "
             "2 processes also synchronise every step on 2 busy cores). The figures show that the protocol runs and "
             "what it moves per step."), "",
            "| processes | events/s | epoch s | steps | bytes all-gathered per step (per rank) | wall s (incl. start-up) |",
            "|---|---|---|---|---|---|",
        ]
        for run in runs:
            gathered = run["bytes_gathered_per_step"]
            lines.append(f"| {run['processes']} | {run['events_per_s']:,.0f} | {run['epoch_s']:.2f} | {run['steps']} | "
                         f"{'–' if gathered is None else f'{gathered:,.0f}'} | {run['wall_s']:.1f} |")
        lines.append("")
    lines += [
        "## Part 2: projected efficiency on 8 and 16 GPUs", "",
        (f"Stage times (TGN, pipelined with s = 2, memory in pinned host memory) from `{source.relative_to(REPO)}`: "
         + ", ".join(f"τ{j} = {1e3 * times[f'tau{j}']:.1f} ms" for j in range(1, 6))
         + f" at local batch {times['batch']} ({times['data']})."), "",
        ("Model (weak scaling, local batch fixed, as MSPipe trains): per-iteration period "
         "P(W) = max(τ1, τ2 + τ3, τ4 + all-reduce(W), τ5 · rows(W) / rows(1) + all-gather(W)); "
         "efficiency = P(1) / P(W)."),
        (f"- All-reduce: DDP's gradients, {params / 1e6:.2f} MB (TGN's parameters, float32), ring inside a node, "
         "hierarchical across nodes; assumed not overlapped with backward (worst case)."),
        (f"- All-gather: each rank's packed memory write, bound {write_bytes(times['batch'], 100, 172) / 1e6:.2f} MB "
         "(2b memory rows and 2b mails of 172-dim edge features), on the writer lane."),
        ("- Stage 5 grows with the rows the merged write touches: rows(W) = mean distinct endpoints of a global batch "
         "of W·b Wikipedia events: " + ", ".join(f"W = {w}: {r:,.0f}" for w, r in rows.items()) + "."),
        (f"- Links: {NVLINK.name}, {NVLINK.latency * 1e6:.0f} µs per step; {ETHERNET_100G.name}, "
         f"{ETHERNET_100G.latency * 1e6:.0f} µs per step; {GPUS_PER_NODE} GPUs per node."),
        ("- Not modelled: stragglers (every step waits for the slowest rank), the merge's own kernels (small next to "
         "the scatter), NCCL's contention between the two process groups."), "",
        ("| GPUs | nodes | global batch | all-reduce ms | all-gather ms | train lane ms | write lane ms | period ms | "
         "bottleneck | s that hides it (`\"auto\"`) | efficiency |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in projection:
        lines.append(f"| {p['gpus']} | {p['nodes']} | {p['global_batch']:,} | {p['all_reduce_ms']:.2f} | "
                     f"{p['all_gather_ms']:.2f} | {p['train_ms']:.1f} | {p['write_ms']:.1f} | {p['period_ms']:.1f} | "
                     f"{p['bottleneck']} | {p['auto_staleness']} | {p['efficiency']:.1%} |")
    lines += ["", ("Reading: the write lane applies the whole global batch's write on every rank, so its time grows "
                   "with the distinct nodes of the global batch; it stays hidden behind the training step while it is "
                   "shorter (the staleness bound absorbs it; `\"auto\"` raises s when τ5 grows). Across nodes, the "
                   "all-gather through one 100 Gb/s NIC per node adds to the same lane."), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=20_000, help="synthetic events (part 1)")
    parser.add_argument("--batch-size", type=int, default=600, help="global batch (part 1)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (part 1; the last is reported)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take")
    parser.add_argument("--stage-times", type=Path, default=STAGE_TIMES)
    parser.add_argument("--skip-run", action="store_true", help="the projection only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.events, args.batch_size, args.epochs)
        return
    runs = [] if args.skip_run else [run_processes(p, args.events, args.batch_size, args.epochs, args.timeout)
                                     for p in (1, 2)]
    times = stage_times(args.stage_times, "tgn", "2")
    worlds = [1, 8, 16]
    rows = unique_endpoints(int(times["batch"]), worlds)
    params = parameter_bytes(times["model_config"])
    projection = project(times, params, rows, worlds)
    command = " ".join(["python bench/scaling.py", *sys.argv[1:]])
    payload = {"cpu_runs": runs, "stage_times": times, "parameter_bytes": params, "rows": rows,
               "links": [asdict(NVLINK), asdict(ETHERNET_100G)], "projection": projection, "command": command}
    _, md_path = write_results("scaling_cpu", payload,
                                       markdown(runs, times, args.stage_times, params, rows, projection, command),
                                       args.out)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
