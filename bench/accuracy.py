"""Benchmark: link-prediction accuracy of TGN, JODIE, APAN and EdgeBank on real data, next to published numbers.

Protocol (DyGLib's, Yu et al., NeurIPS 2023; the same settings as ``recipes/protocols/``): our
``TemporalDataModule`` (70/15/15 chronological split, 10% of the evaluation nodes held out of
training), batch 200, 10 most recent neighbours, training negatives from the training
destinations and fixed evaluation negatives from all destinations, Adam lr 1e-4, memory and
embedding dims 172 for TGN and JODIE (100 for APAN, TGL's settings), up to ``--max-epochs`` epochs
with early stopping on validation AP (``--patience``), the best checkpoint (memory included)
restored for the test, ``--seeds`` seeds. EdgeBank (unlimited) is the floor. Measures, per model ×
data set, mean ± sample std over seeds of AP and AUROC (transductive and inductive) and MRR against
``--mrr-negatives`` fixed negatives (TGB's tie rule), the validation AP of every epoch (learning
curves; ``accuracy_<tag>_curves.png`` when matplotlib is installed) and where the epoch cap bound.

Runs are independent processes (``--jobs`` at a time, ``--device cuda`` to train on a GPU), so a
GPU machine runs the whole table in minutes.

Run from the repository root::

    nice -n 10 python bench/accuracy.py --jobs 1                       # full: 4 models x 4 data sets x 3 seeds
    nice -n 10 python bench/accuracy.py --resume                       # go on where an earlier sitting stopped
    python bench/accuracy.py --device cuda --jobs 12                    # on a GPU machine
    python bench/accuracy.py --models tgn edgebank --datasets uci --seeds 0 --max-epochs 2   # a quick look

Writes ``bench/results/accuracy_<tag>.json`` and ``.md`` (tag: the device), rewritten after every
finished run. ``--resume`` keeps the runs already in that JSON (same protocol settings) and runs only
the missing model × data set × seed combinations, so a table too long for one sitting fills up over
several. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    REAL_DATASETS,
    RESULTS,
    bench_trainer,
    epoch_curves,
    load_dataset,
    mean_std,
    quiet_lightning,
    run_in_processes,
    write_results,
)
from lightning_mspipe.data.datamodule import TemporalDataModule  # noqa: E402
from lightning_mspipe.models import APAN, JODIE, TGN, EdgeBank  # noqa: E402

MODELS = {"tgn": TGN, "jodie": JODIE, "apan": APAN, "edgebank": EdgeBank}
_DYGLIB_DIMS = dict(memory_dim=172, time_dim=100, embedding_dim=172, dropout=0.1, lr=1e-4)
MODEL_ARGS: dict[str, dict[str, Any]] = {
    "tgn": _DYGLIB_DIMS,
    "jodie": _DYGLIB_DIMS,
    "apan": dict(memory_dim=100, time_dim=100, embedding_dim=100, dropout=0.1, lr=1e-4),  # TGL's APAN
    "edgebank": {},
}
DATA_ARGS = dict(batch_size=200, num_neighbors=10, sampling="recent", train_negatives="train_dst", eval_negatives="dst")
METRICS = ("ap", "auroc", "ap_inductive", "auroc_inductive", "mrr")
FULL_COMMAND = "nice -n 10 python bench/accuracy.py --seeds 0 1 2 --mrr-negatives 100"  # DyGLib: 100 epochs, patience 20

# DyGLib, random negative sampling, AP / AUC-ROC x 100, mean ± std over 5 runs. Tables (captions as in
# the paper): "AP for transductive dynamic link prediction with random, historical, and inductive
# negative sampling strategies" and "AP for inductive dynamic link prediction ..." (main text), "AUC-ROC
# for transductive ..." and "AUC-ROC for inductive ..." (appendix). Transcribed from two later papers that
# reprint DyGLib's baseline rows and agree digit for digit on every value used here: TPNet (Lu et al.,
# NeurIPS 2024, Table 1 and appendix) and DyG-Mamba (appendix Tables 15-17); the inductive AP rows also
# match the TAWRMAC README (DSAatUSU/tawrmac). DyGLib's protocol differs from ours in: batch 200, up to 100
# epochs with early stopping on validation AP (patience 20), model-specific tuned settings (e.g. memory
# dim 172), negatives drawn from the destination nodes (ours: from all nodes), and the data sets' own
# features (Wikipedia's 172-dim LIWC edge features, which we lack).
PUBLISHED_SOURCE = (
    "DyGLib (Yu et al., NeurIPS 2023), random negative sampling: tables 'AP for transductive/inductive "
    "dynamic link prediction with random, historical, and inductive negative sampling strategies' and the "
    "appendix 'AUC-ROC for transductive/inductive ...' tables, rnd rows (checked against the reprints in "
    "TPNet, NeurIPS 2024, and DyG-Mamba, which agree on every value)"
)
PUBLISHED: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("jodie", "wikipedia"): {"ap": (96.50, 0.14), "auroc": (96.33, 0.07), "ap_inductive": (94.82, 0.20),
                             "auroc_inductive": (94.33, 0.27)},
    ("tgn", "wikipedia"): {"ap": (98.45, 0.06), "auroc": (98.37, 0.07), "ap_inductive": (97.83, 0.04),
                           "auroc_inductive": (97.72, 0.03)},
    ("jodie", "uci"): {"ap": (89.43, 1.09), "auroc": (90.44, 0.49), "ap_inductive": (79.86, 1.48),
                       "auroc_inductive": (78.80, 0.94)},
    ("tgn", "uci"): {"ap": (92.34, 1.04), "auroc": (92.03, 1.13), "ap_inductive": (88.12, 2.05),
                     "auroc_inductive": (86.68, 2.29)},
    ("jodie", "enron"): {"ap": (84.77, 0.30), "auroc": (87.96, 0.52), "ap_inductive": (80.72, 1.39),
                         "auroc_inductive": (81.96, 1.34)},
    ("tgn", "enron"): {"ap": (86.53, 1.11), "auroc": (88.32, 0.99), "ap_inductive": (77.94, 1.02),
                       "auroc_inductive": (78.83, 1.11)},
    ("jodie", "uslegis"): {"ap": (75.05, 1.52), "auroc": (82.85, 1.07), "ap_inductive": (54.93, 2.29),
                           "auroc_inductive": (58.12, 2.35)},
    ("tgn", "uslegis"): {"ap": (75.99, 0.58), "auroc": (83.34, 0.43), "ap_inductive": (58.63, 0.37),
                         "auroc_inductive": (62.38, 0.48)},
}


#: settings that change a run's result: runs resumed from an earlier sitting must share them
PROTOCOL_KEYS = ("max_epochs", "patience", "mrr_negatives", "max_events")


def earlier_runs(path: Path, args: argparse.Namespace) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The runs and data notes of an earlier sitting's ``path`` (empty when it does not exist).

    Raises:
        SystemExit: The file was written with other protocol settings (its runs would not be comparable).
    """
    if not path.exists():
        return {}, {}
    payload = json.loads(path.read_text())
    earlier = {key: payload["config"].get(key) for key in PROTOCOL_KEYS}
    wanted = {key: getattr(args, key) for key in PROTOCOL_KEYS}
    if earlier != wanted:
        raise SystemExit(f"--resume: {path} holds runs with {earlier}, not {wanted}; pass the same settings, "
                         "or another --tag to start a new table.")
    return payload["runs"], payload["data"]


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One model × data set × seed under the protocol; returns test metrics, learning curve and timings.

    Runs in a worker process (``job`` is plain data): loads the data, trains with early stopping
    on validation AP, tests the best checkpoint.
    """
    quiet_lightning()
    model_name, seed, args = job["model"], job["seed"], job["args"]
    events = load_dataset(job["dataset"], args["max_events"])
    dm = TemporalDataModule(events=events, mrr_negatives=args["mrr_negatives"], seed=seed, **DATA_ARGS)
    L.seed_everything(seed, verbose=False)
    model = MODELS[model_name](num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **MODEL_ARGS[model_name])
    recorder = epoch_curves()
    learned = model_name != "edgebank"
    with tempfile.TemporaryDirectory() as folder:
        best = ModelCheckpoint(dirpath=folder, monitor="val/ap", mode="max", save_top_k=1)
        stop = EarlyStopping(monitor="val/ap", mode="max", patience=args["patience"])
        trainer = bench_trainer(
            max_epochs=args["max_epochs"] if learned else 1,
            accelerator="gpu" if args["device"] == "cuda" else "cpu",
            devices=1,
            enable_checkpointing=learned,
            callbacks=[recorder, best, stop] if learned else [recorder],
        )
        trainer.fit(model, dm)
        start = time.perf_counter()
        result = trainer.test(model, dm, ckpt_path="best" if learned else None, verbose=False)[0]
        test_s = time.perf_counter() - start
    epochs = len(recorder.times)
    return {
        "dataset": job["dataset"], "model": model_name, "seed": seed,
        "metrics": {m: float(result[f"test/{m}"]) for m in METRICS if f"test/{m}" in result},
        "val_ap": recorder.val_ap, "epochs": epochs, "best_epoch": max(range(len(recorder.val_ap)), key=recorder.val_ap.__getitem__, default=0),
        "cap_bound": learned and epochs == args["max_epochs"] and not trainer.should_stop,
        "epoch_s": recorder.times, "test_s": test_s,
        "data": {"events": events.num_events, "nodes": events.num_nodes, "edge_dim": events.edge_dim,
                 "split": dm.split_sizes(), "note": REAL_DATASETS[job["dataset"]][2]},
    }


def plot_curves(runs: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """Validation AP per epoch, one panel per data set, one line per model × seed; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    datasets = sorted({key.split("/")[0] for key in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    colors = {"tgn": "tab:blue", "jodie": "tab:orange", "apan": "tab:green", "edgebank": "tab:gray"}
    for ax, dataset in zip(axes[0], datasets):
        for key, model_runs in sorted(runs.items()):
            if not key.startswith(dataset + "/"):
                continue
            model = key.split("/")[1]
            for i, run in enumerate(model_runs):
                label = model if i == 0 else None
                if model == "edgebank":  # nothing learned: one validation AP, drawn across the panel
                    ax.axhline(run["val_ap"][0], color=colors[model], linestyle="--", label=label)
                else:
                    ax.plot(range(1, len(run["val_ap"]) + 1), run["val_ap"], color=colors.get(model), alpha=0.8,
                            label=label)
        ax.set_title(dataset)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation AP")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of every metric and timing over the runs (seeds) of one model × data set."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for m in METRICS:
        values = [r["metrics"][m] for r in runs if m in r["metrics"]]
        if values:
            out[m] = mean_std(values)
    out["epoch_s"] = mean_std([t for r in runs for t in r["epoch_s"]])
    out["test_s"] = mean_std([r["test_s"] for r in runs])
    out["epochs"] = [r["epochs"] for r in runs]
    out["cap_bound"] = sum(bool(r["cap_bound"]) for r in runs)
    return out


def fmt(value: tuple[float, float | None] | None, scale: float = 100.0, digits: int = 2) -> str:
    if value is None:
        return "—"
    mean, std = value
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def markdown(args: argparse.Namespace, summary: dict[str, dict[str, Any]], data_info: dict[str, Any],
             machine: str) -> str:
    q = args.mrr_negatives
    lines = [f"# Link-prediction accuracy: TGN, JODIE, APAN and EdgeBank on real data ({args.tag})", "", machine, ""]
    full = args.max_epochs >= 50 and args.patience >= 10 and not args.max_events
    if full:
        if args.max_epochs < 100 or args.patience < 20:
            lines += [f"Budget capped at {args.max_epochs} epochs, patience {args.patience} (DyGLib's: 100, 20; "
                      "column *cap* says where the cap bound).", ""]
        lines += ["Full protocol settings; rows with fewer than 3 seeds (column *seeds*) are still being filled "
                  "(`--resume`).", ""] if any(len(s["seeds"]) < 3 for s in summary.values()) else []
    else:
        lines += [
            f"**REDUCED RUN** (up to {args.max_epochs} epochs, patience {args.patience}, seeds {args.seeds}"
            + (f", first {args.max_events:,} events only" if args.max_events else "")
            + f"). Full protocol: `{FULL_COMMAND}`.",
            "",
        ]
    lines += [
        f"Protocol (DyGLib's; `recipes/protocols/`): batch {DATA_ARGS['batch_size']}, {DATA_ARGS['num_neighbors']} "
        "most recent neighbours, Adam lr 1e-4, dims 172 (TGN, JODIE) or 100 (APAN, TGL's), training negatives from "
        "the training destinations, fixed evaluation negatives from all destinations; chronological 70/15/15 split, "
        "10% of evaluation nodes held out of training; early stopping on validation AP, best checkpoint tested. "
        f"*epochs*: epochs run per seed (*cap* counts seeds stopped by the {args.max_epochs}-epoch cap rather than "
        f"by patience). MRR: rank among {q} fixed negatives, TGB's tie rule (not TGB's own negatives). Values ×100 "
        "except MRR; mean ± sample std over seeds.",
        "",
        f"Published (*pub.*): {PUBLISHED_SOURCE}. DyGLib trains up to 100 epochs with patience 20 and uses "
        "Wikipedia's LIWC features (our copy lacks them). APAN is not in DyGLib; its published cells are blank.",
        "",
        "| data set | model | AP | pub. AP | AUROC | pub. AUROC | AP ind. | pub. AP ind. | MRR | seeds | epochs | cap "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(summary, key=lambda k: (list(REAL_DATASETS).index(k.split("/")[0]), list(MODELS).index(k.split("/")[1]))):
        s = summary[key]
        dataset, model = key.split("/")
        pub = PUBLISHED.get((model, dataset), {})
        cells = []
        for m in ("ap", "auroc", "ap_inductive"):
            cells += [fmt(s.get(m)), fmt(pub[m], scale=1.0) if m in pub else "—"]
        lines.append(
            f"| {dataset} | {model} | " + " | ".join(cells)
            + f" | {fmt(s.get('mrr'), scale=1.0, digits=3)} | {len(s['seeds'])} | {s['epochs']} | {s['cap_bound']} "
            f"| {fmt(s['epoch_s'], 1.0, 1)} |"
        )
    lines += ["", "Learning curves (validation AP per epoch, per seed):", ""]
    for key in sorted(summary):
        curves = "; ".join(
            " ".join(f"{ap:.3f}" for ap in run["val_ap"]) for run in summary[key].get("runs", [])
        )
        lines.append(f"- {key}: {curves}")
    lines += ["", "Data (what our copies lack against the published setting):", ""]
    for name, info in data_info.items():
        lines.append(f"- **{name}**: {info['events']:,} events, {info['nodes']:,} nodes, edge_dim {info['edge_dim']}, "
                     f"split {info['split']}; {info['note']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--datasets", nargs="+", default=list(REAL_DATASETS), choices=list(REAL_DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=100, help="epoch cap (DyGLib's: 100)")
    parser.add_argument("--patience", type=int, default=20, help="early stopping patience on validation AP (DyGLib's: 20)")
    parser.add_argument("--mrr-negatives", type=int, default=100, help="fixed negatives per test event for MRR")
    parser.add_argument("--max-events", type=int, default=None, help="keep only the first N events of each data set")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (separate processes)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--tag", default=None, help="results file suffix (default: the device)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the results JSON and run only the missing ones")
    args = parser.parse_args()
    if args.max_epochs < 1 or args.jobs < 1:
        parser.error("--max-epochs and --jobs must be ≥ 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    args.tag = args.tag or (torch.cuda.get_device_name(0).replace(" ", "_") if args.device == "cuda" else "cpu")
    import lightning

    machine = (f"Machine: {args.device}" + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
               + f", {multiprocessing.cpu_count()} CPUs, {args.jobs} run(s) at a time; torch {torch.__version__}, "
               f"lightning {lightning.__version__}; {time.strftime('%Y-%m-%d', time.gmtime())}.")
    print(machine, flush=True)
    job_args = {k: getattr(args, k) for k in ("max_events", "mrr_negatives", "max_epochs", "patience", "device")}
    results = (args.out or RESULTS) / f"accuracy_{args.tag}.json"
    runs, data_info = earlier_runs(results, args) if args.resume else ({}, {})
    done = {(key, run["seed"]) for key, key_runs in runs.items() for run in key_runs}
    jobs = [{"model": m, "dataset": d, "seed": seed, "args": job_args}
            for seed in args.seeds for d in args.datasets for m in args.models  # seeds outermost
            if (f"{d}/{m}", seed) not in done]
    if args.resume:
        print(f"--resume: {len(done)} run(s) kept from {results}, {len(jobs)} to go", flush=True)
    config = {"argv": sys.argv[1:], **{k: v for k, v in vars(args).items() if k != "out"},
              "full_command": FULL_COMMAND, "model_args": MODEL_ARGS, "data_args": DATA_ARGS}
    started = time.perf_counter()

    def record() -> str:
        summary = {k: summarize(r) | {"runs": r} for k, r in runs.items()}
        payload = {"config": config, "published_source": PUBLISHED_SOURCE,
                   "published": {f"{d}/{m}": v for (m, d), v in PUBLISHED.items()},
                   "data": data_info, "summary": {k: {kk: vv for kk, vv in v.items() if kk != "runs"}
                                                  for k, v in summary.items()},
                   "runs": runs, "wall_s": time.perf_counter() - started}
        text = markdown(args, summary, data_info, machine)
        json_path, _ = write_results(f"accuracy_{args.tag}", payload, text, args.out)
        plot_curves(runs, json_path.with_name(f"accuracy_{args.tag}_curves.png"))
        return text

    for run in run_in_processes(run_one, jobs, args.jobs):  # spawned workers (CUDA needs them)
        key = f"{run['dataset']}/{run['model']}"
        runs.setdefault(key, []).append(run)
        data_info[run["dataset"]] = run.pop("data")
        shown = ", ".join(f"{m} {v:.4f}" for m, v in run["metrics"].items())
        print(f"[{time.perf_counter() - started:7.0f}s] {key} seed {run['seed']}: {shown}; {run['epochs']} epochs "
              f"(best {run['best_epoch'] + 1}), {sum(run['epoch_s']):.1f}s train, {run['test_s']:.1f}s test",
              flush=True)
        record()
    print(record() if runs else "no runs")

if __name__ == "__main__":
    main()
