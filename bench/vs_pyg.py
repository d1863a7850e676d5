"""Our TGN against PyG's TGN example (``examples/tgn.py`` as published), side by side in one run (CPU).

The peer is :mod:`bench.peers.pyg_tgn`: PyG's example with only data loading and timing added
(its ``train_val_test_split``, ``TemporalDataLoader(neg_sampling_ratio=1.0)``,
``LastNeighborLoader``, model and training step). Ours is :class:`~lightning_mspipe.models.TGN`
trained by a plain ``lightning.Trainer`` (no pipeline strategy) with the example's
hyper-parameters (memory/time/embedding 100, 10 neighbours, Adam lr 1e-4) on the same
training events (the first 70% by time: ``new_node_ratio=0``) and the same val/test events.

Epochs are interleaved: our epoch ``e`` (a Lightning training epoch), then the peer's epoch
``e``, so both see the same machine load. After every epoch both score val then test with
memory continuing, and report test AP as the example computes it (sklearn AP per batch,
averaged over batches; negatives drawn from the destination nodes). Reported per data set and
batch size:

- **epoch time**: median training time per epoch (training loop only), ours / PyG's
  (target ≤ 0.8);
- **time to PyG's best AP**: cumulative training time until our test AP ≥ the best test AP
  of PyG's run, against PyG's cumulative training time to its own best epoch (target ≤ 0.5).

Usage: ``python bench/vs_pyg.py [--datasets wikipedia uci] [--batch-sizes 200 600]
[--epochs 4] [--threads N]`` (``pip install -r bench/requirements.txt``). The default run
takes about 15 minutes on 2 quiet cores. Writes ``bench/results/vs_pyg_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import CoTenantMeter, bench_trainer, load_dataset, quiet_lightning, write_results
from bench.peers.pyg_tgn import EXAMPLE_COMMIT, example_epochs, to_temporal_data
from lightning_mspipe import allocator
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.models import TGN

DATA_SETS = ("wikipedia", "uci")
BATCH_SIZES = (200, 600)
HPARAMS = {"num_neighbors": 10, "memory_dim": 100, "time_dim": 100, "embedding_dim": 100, "lr": 1e-4}


def mean_batch_ap(model: TGN, batches: Any) -> float:
    """Score ``batches`` in order with memory continuing (as ``test_step`` does); the mean over
    batches of sklearn's AP of ``[pos; neg]``, the example's metric."""
    aps = []
    for batch in batches:
        batch = batch.to(model.device)
        out = model(batch)
        model.memory.scatter(model.memory_write(batch, out.memory))
        pos, neg = out.pos.sigmoid(), out.neg[:, 0].sigmoid()
        y_true = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        aps.append(average_precision_score(y_true, torch.cat([pos, neg])))
    return statistics.fmean(aps)


class Interleave(L.Callback):
    """Times our training epochs; after each, scores val and test, then runs one epoch of the peer.

    Attributes:
        ours, pyg: one dict per epoch (``train_s``, ``val_ap``, ``test_ap``; the peer's as it yields).
    """

    def __init__(self, dm: TemporalDataModule, peer: Iterator[dict[str, Any]]) -> None:
        self.dm, self.peer = dm, peer
        self.ours: list[dict[str, float]] = []
        self.pyg: list[dict[str, Any]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        train_s = time.perf_counter() - self._start
        assert isinstance(pl_module, TGN)
        phases = pl_module.phases
        pl_module.eval()
        with torch.no_grad():
            phases.start_validation(sanity_check=False)
            val_ap = mean_batch_ap(pl_module, self.dm.val_dataloader())
            phases.end_validation()
            phases.start_test(lambda: None)  # memory holds the validation events already
            test_ap = mean_batch_ap(pl_module, self.dm.test_dataloader())
        pl_module.train()
        self.ours.append({"train_s": train_s, "val_ap": val_ap, "test_ap": test_ap})
        print(f"  ours epoch {len(self.ours)}: {train_s:.2f} s, val AP {val_ap:.4f}, test AP {test_ap:.4f}", flush=True)
        self.pyg.append(next(self.peer))


def time_to_reach(epochs: list[dict[str, Any]], target: float) -> float | None:
    """Cumulative training time until the first epoch whose test AP ≥ ``target`` (``None``: never)."""
    for cumulative, epoch in zip(itertools.accumulate(e["train_s"] for e in epochs), epochs):
        if epoch["test_ap"] >= target:
            return cumulative
    return None


def compare(name: str, batch_size: int, epochs: int, seed: int) -> dict[str, Any]:
    """One data set at one batch size: interleaved epochs of ours and the peer, then the ratios."""
    events = load_dataset(name)
    dm = TemporalDataModule(events=events, batch_size=batch_size, num_neighbors=HPARAMS["num_neighbors"],
                            new_node_ratio=0.0, eval_negatives="dst", mrr_negatives=1, seed=seed)
    peer = example_epochs(to_temporal_data(events), batch_size, epochs, seed, log=lambda line: print("  pyg " + line))
    torch.manual_seed(seed)
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, memory_dim=HPARAMS["memory_dim"],
                time_dim=HPARAMS["time_dim"], embedding_dim=HPARAMS["embedding_dim"], lr=HPARAMS["lr"])
    interleave = Interleave(dm, peer)
    meter = CoTenantMeter()
    bench_trainer(max_epochs=epochs, limit_val_batches=0, callbacks=[interleave]).fit(model, dm)
    ours, pyg = interleave.ours, interleave.pyg
    best = max(range(len(pyg)), key=lambda i: pyg[i]["test_ap"])
    pyg_best_ap = pyg[best]["test_ap"]
    pyg_to_best = sum(e["train_s"] for e in pyg[: best + 1])
    ours_to_best = time_to_reach(ours, pyg_best_ap)
    ours_epoch = statistics.median(e["train_s"] for e in ours)
    pyg_epoch = statistics.median(e["train_s"] for e in pyg)
    share = meter.share()
    return {
        "dataset": name, "batch_size": batch_size, "epochs": epochs,
        "train_events": {"ours": dm.split_sizes()["train"], "pyg": pyg[0]["train_events"]},
        "ours_epoch_s": ours_epoch, "pyg_epoch_s": pyg_epoch, "epoch_time_ratio": ours_epoch / pyg_epoch,
        "pyg_best_test_ap": pyg_best_ap, "pyg_best_epoch": best + 1, "pyg_time_to_best_s": pyg_to_best,
        "ours_time_to_pyg_best_s": ours_to_best,
        "time_to_ap_ratio": None if ours_to_best is None else ours_to_best / pyg_to_best,
        "ours_best_test_ap": max(e["test_ap"] for e in ours),
        "other_processes_cpu_share": share,
        "ours_epochs": ours, "pyg_epochs": pyg,
    }


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The results table and the notes."""
    def fmt(x: float | None, spec: str) -> str:
        return "not reached" if x is None else format(x, spec)

    shares = [r["other_processes_cpu_share"] for r in rows if r["other_processes_cpu_share"] is not None]
    lines = [
        "# TGN: lightning-mspipe vs PyG's examples/tgn.py (CPU)",
        "",
    ]
    if shares and max(shares) > 0.1:
        lines += [
            (f"**Warning: shared machine.** Other processes used {min(shares):.0%}–{max(shares):.0%} of the CPU "
             "time during the runs; absolute times are inflated and noisy. Epochs were interleaved "
             "(ours, then PyG's) so the ratios see the same load, but rerun on a quiet machine for final numbers."),
            "",
        ]
    lines += [
        (f"Peer: PyG's `examples/tgn.py` at commit {EXAMPLE_COMMIT[:7]} as published (bench/peers/pyg_tgn.py: only "
         f"data loading and timing added). {args.epochs} epochs each, seed {args.seed}, {torch.get_num_threads()} "
         "torch thread(s); dims 100, 10 neighbours, Adam lr 1e-4 on both sides; both train on the first 70% of "
         "events and score val then test after every epoch with memory continuing; test AP = the example's metric "
         "(sklearn AP per batch, averaged). Epoch time = median training-loop time per epoch. Both sides run in one "
         "process, so both train with the allocator settings our models set on the CPU "
         f"(`lightning_mspipe/allocator.py`: {'on' if allocator.is_active() else 'off'} in this run). Targets: "
         "epoch-time ratio ≤ 0.8, time-to-PyG's-best ratio ≤ 0.5."),
        "",
        ("| data set | batch | ours s/epoch | PyG s/epoch | epoch ratio | PyG best test AP (epoch) "
         "| PyG time to best (s) | ours time to it (s) | time-to-AP ratio | ours best test AP |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['batch_size']} | {r['ours_epoch_s']:.2f} | {r['pyg_epoch_s']:.2f} | "
            f"{r['epoch_time_ratio']:.2f} | {r['pyg_best_test_ap']:.4f} ({r['pyg_best_epoch']}) | "
            f"{r['pyg_time_to_best_s']:.1f} | {fmt(r['ours_time_to_pyg_best_s'], '.1f')} | "
            f"{fmt(r['time_to_ap_ratio'], '.2f')} | {r['ours_best_test_ap']:.4f} |"
        )
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """Differences that remain between the two (each side as its authors run it): neighbours — ours
sees every event strictly earlier than the root's time (TGN's reference protocol, DESIGN.md §2), PyG's
`LastNeighborLoader` hides the whole batch; ours embeds every root at its own time (a temporal attention
layer over the K most recent events), PyG embeds each node of the batch once (TransformerConv over its
last-K inserted neighbours); training negatives: ours uniform over all nodes, PyG's over [min dst, max
dst]; evaluation negatives: ours fixed, drawn from the destination nodes, PyG's redrawn from
[min dst, max dst] with seed 12345 at each evaluation; ours encodes log(1 + Δt), PyG's raw Δt; memory:
ours writes after the optimizer step, PyG's `TGNMemory` updates inside the step. Neither data set has
edge features in our copies; the peer gets one zero column (TGNMemory fails on zero-width messages).

## Why PyG's example measured 2× the re-implementation it replaces (14.6–17.8 s vs 7.4 s per epoch)

Measured 2026-12-01 (1 torch thread, one process, epochs alternated, twice; machine shared, load ~5–7 on
2 cores; details in the docstring of bench/peers/pyg_tgn.py). Both run the same PyG modules, so per
event they cost the same (the re-implementation on the example's split: 0.98 and 1.12 of the example).
(1) The example trains on all of the first 70% of events (110,232 on Wikipedia), the re-implementation
on our split without the inductive hold-out (92,363): ×1.23 and ×1.25 per epoch. (2) If the example ran
on PyG's `JODIEDataset` (172 edge features, missing from our copy): ×1.19 and ×1.04 more. (3) The rest
is the machine: with 2 OpenMP threads on 2 shared cores the same epoch took 214 s against 24 s with
1 thread within one hour; the 7.4 s was recorded at load 1.9. Hence the interleaved epochs above.

Where the time goes (cProfile, 1 thread, batch 600, Wikipedia). PyG's example: backward 38%;
`TGNMemory._get_updated_memory` 42% (it runs twice per batch: in `memory(n_id)` and in
`update_state`), of which the GRU 11% and the per-node Python message store ~18%; TransformerConv 12%.
Ours: backward ~60%, forward ~30% (temporal attention over `[3B, K]` root × neighbour slots with a
`[3B, K, 100]` time encoding ~65–70% of forward+backward, GRU updater ~20%), Lightning, sampling, memory gather and
scatter ~5% together. Ours embeds each root (source, destination, negative) at its own time over its
K most recent earlier events; PyG embeds each node of the batch once over its last K inserted
neighbours, fewer and cheaper rows; that is the per-batch work that keeps our epoch above 0.8× PyG's.

Why UCI at batch 600 stays above 0.8× (2026-12-02, AMD EPYC, 2 threads): per batch, ours costs about the
same on UCI as on Wikipedia (90 vs 100 ms), PyG's does not (99 vs 138 ms); its memory and embedding work
scales with the distinct nodes of the batch's neighbourhood (UCI: 1,899 nodes, Wikipedia: 9,227), ours with
the 3B roots × K slots. Speed changes of 2026-12-02 (paired A/B of a TGN step, UCI, batch 600, 2 threads,
12 alternating rounds): the time encoding's backward as one fused `tanh_backward` pass (×0.96); glibc's
allocator kept from returning freed blocks to the kernel (`lightning_mspipe/allocator.py`): 109–124 ms →
79–89 ms per step, page faults −15–26%; the peer shares the process and the setting (UCI batch 600, 3 epochs
each: ratio 1.02 without it, 0.91 with it).

Speed changes of 2026-12-01 (paired A/B of one training step on a fixed batch, CPU time, 1 thread):
the time encoder's backward in three passes instead of six (`layers._StepEncoding` now; a cosine then): step time ×0.91–0.98
(UCI, Wikipedia); Adam with `fused=True`: 0.36 ms instead of 1.26 ms per step (×0.99). Tried and
dropped (no gain measured in the step): einsum or head-major `bmm` for the slot contractions (the
broadcast multiply-and-sum was fastest), per-head multiply-and-sum for the time-feature terms, and
broadcast multiply-adds for the backward of the `[K, 2] @ [2, F]` products."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATA_SETS), choices=list(DATA_SETS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    print(f"device cpu, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)

    rows = []
    for name, batch_size in itertools.product(args.datasets, args.batch_sizes):
        print(f"{name}, batch {batch_size}:", flush=True)
        row = compare(name, batch_size, args.epochs, args.seed)
        rows.append(row)
        print(f"{name} b{batch_size}: epoch ours {row['ours_epoch_s']:.2f} s vs PyG {row['pyg_epoch_s']:.2f} s "
              f"(ratio {row['epoch_time_ratio']:.2f}); PyG best test AP {row['pyg_best_test_ap']:.4f} after "
              f"{row['pyg_time_to_best_s']:.1f} s, ours reached it after "
              f"{row['ours_time_to_pyg_best_s'] if row['ours_time_to_pyg_best_s'] is None else round(row['ours_time_to_pyg_best_s'], 1)} s "
              f"(ratio {row['time_to_ap_ratio'] if row['time_to_ap_ratio'] is None else round(row['time_to_ap_ratio'], 2)})",
              flush=True)
    config = vars(args) | HPARAMS | {"threads": torch.get_num_threads(), "example_commit": EXAMPLE_COMMIT}
    md = markdown(rows, args)
    write_results("vs_pyg_cpu", {"config": config, "rows": rows}, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
