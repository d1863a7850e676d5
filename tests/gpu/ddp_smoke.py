"""One-device smoke run of MSPipeDDPStrategy (``strategy="mspipe_ddp"``): NCCL on a GPU, gloo on a CPU.

Run in a process of its own by ``tests/gpu/test_cuda_pipeline.py`` (a process group outlives the
fit); prints ``mspipe_ddp smoke: ok`` when the fit ran pipelined within the bound and left no
pipeline thread. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_mspipe import TGN, MSPipeDDPStrategy, StalenessGuard
from lightning_mspipe.pipeline.lanes import THREAD_PREFIX
from tests.conftest import SMALL_MODEL, small_datamodule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    torch.manual_seed(0)
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    strategy = MSPipeDDPStrategy(max_staleness=1, memory_device="pinned" if cuda else None,
                                 process_group_backend="nccl" if cuda else "gloo", timeout=60)
    guard = StalenessGuard()
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, strategy=strategy, max_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=2, callbacks=[guard])
    trainer.fit(model, dm)
    pipeline = trainer.strategy.pipeline
    assert pipeline is not None and trainer.strategy.world_size == 1
    assert max(guard.histogram) <= 1 and sum(guard.histogram.values()) == trainer.num_training_batches
    assert model.memory.current_version > 0
    deadline = time.monotonic() + 5
    while (leftover := [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]):
        assert time.monotonic() < deadline, f"pipeline threads outlived the fit: {leftover}"
        time.sleep(0.01)
    print(f"mspipe_ddp smoke: ok ({trainer.num_training_batches} batches, staleness {dict(guard.histogram)})")


if __name__ == "__main__":
    main()
