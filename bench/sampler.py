"""Benchmark: one training epoch of temporal neighbour sampling, ours vs PyG's LastNeighborLoader.

Wikipedia events, chronological 70/15/15 split, batches of 600 training events, K = 10. The roots
of a batch are its sources, destinations and one random negative destination per event, each at
its event's time. Both samplers see the same batches:

- ours: ``TemporalGraph`` over the training events, ``sample(roots, times, K, "recent",
  max_eid=first event of the batch)``;
- PyG: ``LastNeighborLoader(num_nodes, size=K)``: ``loader(roots)`` then ``loader.insert(src, dst)``
  per batch (PyG learns recency from the inserted events, so the insert is part of its cost).

Run from the repository root (``pip install -r bench/requirements.txt`` first)::

    python bench/sampler.py [--repeats 7] [--device cpu]

Prints device, versions, both medians and the ratio; writes ``bench/results/sampler_<device>.json``
and ``.md``. Not collected by pytest (``testpaths = ["tests"]``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path


import torch

from lightning_mspipe.data import EventStream, TemporalGraph, load_events

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "wikipedia" / "wikipedia_edges.csv.gz"


def load_wikipedia(path: Path) -> EventStream:
    if not path.exists():
        raise SystemExit(f"bench/sampler.py: Wikipedia events not found at {path}; pass --data PATH.")
    return load_events(path)


def make_batches(events: EventStream, batch_size: int, seed: int, device: torch.device) -> list[dict]:
    """Training batches of the chronological 70/15/15 split, with one fixed negative per event."""
    train_end = int(0.70 * events.num_events)
    gen = torch.Generator().manual_seed(seed)
    dst_pool = torch.unique(events.dst[:train_end])
    neg = dst_pool[torch.randint(dst_pool.numel(), (train_end,), generator=gen)]
    batches = []
    for lo in range(0, train_end, batch_size):
        hi = min(lo + batch_size, train_end)
        src, dst, t = events.src[lo:hi], events.dst[lo:hi], events.t[lo:hi]
        batches.append(
            {
                "first": lo,
                "src": src.to(device),
                "dst": dst.to(device),
                "roots": torch.cat([src, dst, neg[lo:hi]]).to(device),
                "times": t.repeat(3).to(device),
            }
        )
    return batches


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_ours(
    graph: TemporalGraph, batches: list[dict], k: int, device: torch.device, validate: bool
) -> float:
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        graph.sample(batch["roots"], batch["times"], k, "recent", max_eid=batch["first"], validate=validate)
    sync(device)
    return time.perf_counter() - start


def epoch_pyg(loader, batches: list[dict], device: torch.device) -> float:
    loader.reset_state()
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        loader(batch["roots"])
        loader.insert(batch["src"], batch["dst"])
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batch-size", type=int, default=600)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--note", default="", help="free text recorded in the results (e.g. run-to-run spread)"
    )
    args = parser.parse_args()

    try:
        import torch_geometric
        from torch_geometric.nn.models.tgn import LastNeighborLoader
    except ImportError as err:
        raise SystemExit("bench/sampler.py needs PyG: pip install -r bench/requirements.txt") from err

    device = torch.device(args.device)
    events = load_wikipedia(args.data)
    train_end = int(0.70 * events.num_events)
    batches = make_batches(events, args.batch_size, args.seed, device)

    start = time.perf_counter()
    graph = TemporalGraph(events, eids=torch.arange(train_end)).to(device)
    build_s = time.perf_counter() - start
    loader = LastNeighborLoader(int(events.num_nodes), size=args.k, device=device)

    load_before = os.getloadavg()
    # Warm-up (allocator, lazy init), then alternate the samplers so drift hits both alike.
    epoch_ours(graph, batches, args.k, device, True)
    epoch_pyg(loader, batches, device)
    ours, ours_nocheck, pyg = [], [], []
    for _ in range(args.repeats):
        ours.append(epoch_ours(graph, batches, args.k, device, validate=True))
        ours_nocheck.append(epoch_ours(graph, batches, args.k, device, validate=False))
        pyg.append(epoch_pyg(loader, batches, device))
    ours_s, ours_nocheck_s, pyg_s = (statistics.median(x) for x in (ours, ours_nocheck, pyg))
    load_after = os.getloadavg()

    # Neighbours found per root (context: PyG ignores time within a batch, ours does not).
    block = graph.sample(batches[-1]["roots"], batches[-1]["times"], args.k, max_eid=batches[-1]["first"])
    result = {
        "benchmark": "one training epoch of temporal neighbour sampling (Wikipedia)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__,
        },
        "setup": {
            "events": events.num_events,
            "nodes": int(events.num_nodes),
            "train_events": train_end,
            "batch_size": args.batch_size,
            "batches": len(batches),
            "roots_per_batch": 3 * args.batch_size,
            "k": args.k,
            "repeats": args.repeats,
        },
        "ours_s": ours_s,
        "ours_no_validation_s": ours_nocheck_s,
        "pyg_s": pyg_s,
        "speedup": pyg_s / ours_s,
        "speedup_no_validation": pyg_s / ours_nocheck_s,
        "ours_min_s": min(ours),
        "pyg_min_s": min(pyg),
        "speedup_of_minima": min(pyg) / min(ours),
        "ours_build_s": build_s,
        "ours_all_s": ours,
        "pyg_all_s": pyg,
        "ours_mean_neighbours_last_batch": float(block.mask.sum(1).double().mean()),
        "note": args.note,
        "semantics": {
            "ours": (
                "TemporalGraph.sample(strategy='recent'): per root the k most recent events of its node "
                "with time strictly earlier than the root's time and index below the batch's first event; "
                "T-CSR (per-node lists sorted by time); a searchsorted on the stream's times turns each root "
                "time into an event-index cut, and one searchsorted on an integer (node, event index) key "
                "finds the end of each root's visible prefix."
            ),
            "pyg": (
                "LastNeighborLoader: the last k events inserted for each node, kept in a dense [N, k] ring "
                "buffer updated by insert() after each batch; no time filter, so it is as strict as the "
                "insert order (a batch's own events are hidden only because they are inserted afterwards)."
            ),
        },
    }

    print(
        f"device: {result['device']} | torch {torch.__version__} | "
        f"torch_geometric {torch_geometric.__version__} | "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    )
    print(
        f"{len(batches)} training batches of {args.batch_size} events, {3 * args.batch_size} roots, "
        f"k={args.k}, median of {args.repeats}"
    )
    print(f"ours (TemporalGraph.sample, validate=True): {ours_s * 1e3:8.2f} ms/epoch")
    print(f"ours (validate=False):                      {ours_nocheck_s * 1e3:8.2f} ms/epoch")
    print(f"PyG LastNeighborLoader (call + insert):     {pyg_s * 1e3:8.2f} ms/epoch")
    print(
        f"minima: ours {min(ours) * 1e3:.2f} ms, PyG {min(pyg) * 1e3:.2f} ms "
        f"({result['speedup_of_minima']:.1f}x); "
        f"1-min load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f}"
    )
    print(
        f"speed-up: {result['speedup']:.1f}x (without validation {result['speedup_no_validation']:.1f}x); "
        f"T-CSR build {build_s * 1e3:.1f} ms once"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"sampler_{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(result))
    print(f"wrote {stem}.json and {stem}.md")


def render_markdown(r: dict) -> str:
    s, m = r["setup"], r["machine"]
    return f"""# Temporal neighbour sampling: one training epoch on Wikipedia

Measured {r["date"]} by `bench/sampler.py` on {r["device"]} ({m["platform"]}, {m["cpu_count"]} CPUs,
{m["torch_threads"]} torch threads), torch {r["versions"]["torch"]},
torch_geometric {r["versions"]["torch_geometric"]}.

Setup: {s["events"]:,} events, {s["nodes"]:,} nodes; chronological 70/15/15 split; {s["batches"]} training
batches of {s["batch_size"]} events ({s["roots_per_batch"]} roots: src, dst, one random negative dst);
k = {s["k"]}; median of {s["repeats"]} epochs after one warm-up.

| sampler | ms / epoch |
|---|---|
| ours: `TemporalGraph.sample(..., "recent", max_eid=batch start)` | {r["ours_s"] * 1e3:.2f} |
| ours, `validate=False` | {r["ours_no_validation_s"] * 1e3:.2f} |
| PyG `LastNeighborLoader`: `loader(roots)` + `insert(src, dst)` | {r["pyg_s"] * 1e3:.2f} |

Fastest epochs: ours {r["ours_min_s"] * 1e3:.2f} ms, PyG {r["pyg_min_s"] * 1e3:.2f} ms
({r["speedup_of_minima"]:.1f}×). 1-minute load average before/after the run:
{m["loadavg_1min_before_after"][0]} / {m["loadavg_1min_before_after"][1]} (a trailing average; the machine may be
shared with other jobs, and a load near its CPU count inflates both samplers' times, PyG's more).

Speed-up of the medians: **{r["speedup"]:.1f}×** ({r["speedup_no_validation"]:.1f}× without
validation). Building the training T-CSR once takes {r["ours_build_s"] * 1e3:.1f} ms (not in the epoch time).

{r["note"]}

- Ours: {r["semantics"]["ours"]}
- PyG: {r["semantics"]["pyg"]}
"""


if __name__ == "__main__":
    main()
