"""Trains a small TGN on 1 or W ranks and writes each rank's results (``rank{r}.pt``) for the distributed tests.

Run by ``torchrun --nproc_per_node 2 tests/distributed/ddp_worker.py --out DIR`` (``--launcher
torchrun``), by itself with ``--launcher lightning`` (Lightning's launcher starts the second
process), or imported: :func:`train` with ``launcher="none"`` is the one-process reference.
Not collected by pytest (no ``test_`` prefix; ``tests/distributed`` is outside ``testpaths``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_mspipe import APAN, JODIE, TGN, MSPipeDDPStrategy, MSPipeStrategy
from lightning_mspipe.pipeline import parse_max_staleness
from tests.conftest import SMALL_MODEL, small_datamodule

GLOBAL_BATCH = 201  # odd: every rank slice is uneven (101 + 100), so is the last batch (15 + 14)
MODELS = {"TGN": TGN, "JODIE": JODIE, "APAN": APAN}
STEP_OF_CHECKPOINT = 4


class StalenessRecord(Callback):
    """(batch index, memory version seen, memory version after the batch's write is flushed) of every batch."""

    def __init__(self, fail_rank: int | None, fail_batch: int | None) -> None:
        self.seen: list[tuple[int, int]] = []
        self.fail_rank, self.fail_batch = fail_rank, fail_batch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank == self.fail_rank and batch.index == self.fail_batch:
            raise ValueError(f"injected failure on rank {trainer.global_rank} at batch {batch.index}")
        self.seen.append((batch.index, batch.memory.version))


def train(
    out: Path,
    launcher: str = "none",
    max_staleness: int | str = 0,
    mode: str = "bounded",
    epochs: int = 1,
    max_steps: int = -1,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
    fail_rank: int | None = None,
    fail_batch: int | None = None,
    timeout: float = 60.0,
    model_name: str = "TGN",
) -> dict[str, Any]:
    """Fit (validation each epoch), then test; write and return this rank's results."""
    torch.manual_seed(0)
    dm = small_datamodule(batch_size=GLOBAL_BATCH)
    model = MODELS[model_name](num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, dropout=0.0, **SMALL_MODEL)
    if launcher == "none":
        strategy: Any = MSPipeStrategy(max_staleness=max_staleness, mode=mode, timeout=timeout)
        devices = 1
    else:
        strategy = MSPipeDDPStrategy(max_staleness=max_staleness, mode=mode, timeout=timeout)
        devices = 2
    record = StalenessRecord(fail_rank, fail_batch)
    callbacks: list[Callback] = [record]
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=STEP_OF_CHECKPOINT,
                                         save_top_k=-1, save_on_train_epoch_end=False))
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_epochs=epochs, max_steps=max_steps,
        logger=False, enable_checkpointing=checkpoint_dir is not None, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
    )
    trainer.fit(model, dm, ckpt_path=resume)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if max_steps < 0:
        metrics.update({k: float(v) for k, v in trainer.test(model, dm, verbose=False)[0].items()})
    results = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "seen": record.seen,
        "bound": None if trainer.strategy.pipeline is None else trainer.strategy.pipeline.bound,
        "metrics": metrics,
        "bytes_gathered": getattr(getattr(trainer.strategy, "memory_sync", None), "bytes_gathered", 0),
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(results, out / f"rank{trainer.global_rank}.pt")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--launcher", choices=("torchrun", "lightning", "none"), default="torchrun")
    parser.add_argument("--max-staleness", type=parse_max_staleness, default=0, help="an int or 'auto'")
    parser.add_argument("--mode", default="bounded")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--fail-rank", type=int)
    parser.add_argument("--fail-batch", type=int)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--model", choices=sorted(MODELS), default="TGN")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train(args.out, args.launcher, args.max_staleness, args.mode, args.epochs, args.max_steps, args.checkpoint_dir,
          args.resume, args.fail_rank, args.fail_batch, args.timeout, args.model)


if __name__ == "__main__":
    main()
