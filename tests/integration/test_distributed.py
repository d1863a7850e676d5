"""MSPipeDDPStrategy on 2 CPU processes (gloo), launched by torchrun and by Lightning's launcher.

Each run trains a small TGN (dropout 0, most-recent neighbours) for one epoch at global batch
201 (so the two ranks' slices are uneven) through ``tests/distributed/ddp_worker.py``, which
writes each rank's state, the memory versions its batches read and its metrics; the reference
is the same worker in this process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.distributed.ddp_worker import STEP_OF_CHECKPOINT, train

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "distributed" / "ddp_worker.py"
RUN_TIMEOUT = 240  # seconds a 2-process run may take on a loaded 2-core machine before the test fails


def run_two_ranks(out: Path, *args: str, launcher: str = "torchrun", timeout: float = RUN_TIMEOUT):
    """Run the worker on 2 processes; return the finished process (its output in ``stdout``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        command = [sys.executable]
    command += [str(WORKER), "--out", str(out), "--launcher", launcher, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def load_ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def assert_same_state(got: dict, reference: dict) -> None:
    """Memory within 1e-5; weights within 1e-4 (the attention's key bias has a zero gradient in exact
    arithmetic, softmax being shift-invariant, so Adam turns float noise into steps of up to lr)."""
    assert got.keys() == reference.keys()
    for name, value in reference.items():
        atol = 1e-5 if ".memory." in name else 1e-4
        torch.testing.assert_close(got[name], value, atol=atol, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def assert_ranks_identical(ranks: list[dict]) -> None:
    for name, value in ranks[0]["state"].items():
        assert torch.equal(ranks[1]["state"][name], value), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """One process at global batch 200, s = 0."""
    return train(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory) -> Path:
    """2 ranks by torchrun at s = 0; rank 0 also saves a checkpoint after step 4 (``checkpoints/``)."""
    out = tmp_path_factory.mktemp("torchrun_s0")
    done = run_two_ranks(out, "--checkpoint-dir", str(out / "checkpoints"))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def torchrun_s0(torchrun_run) -> list[dict]:
    return load_ranks(torchrun_run)


def test_two_ranks_by_torchrun_equal_one_process_at_staleness_zero(torchrun_s0, reference):
    assert [r["world_size"] for r in torchrun_s0] == [2, 2]
    assert_ranks_identical(torchrun_s0)
    assert_same_state(torchrun_s0[0]["state"], reference["state"])
    assert torchrun_s0[0]["seen"] == reference["seen"]  # batch j read version j on both ranks
    assert torchrun_s0[0]["bytes_gathered"] > 0


def test_metrics_of_two_ranks_equal_one_process(torchrun_s0, reference):
    expected = reference["metrics"]
    assert {"val/ap", "test/ap", "test/auroc", "test/mrr", "test/ap_inductive"} <= expected.keys()
    for ranks in torchrun_s0:
        assert ranks["metrics"].keys() == expected.keys()
        assert ranks["metrics"] == pytest.approx(expected, abs=1e-5)


def test_two_ranks_by_lightnings_launcher_equal_one_process_at_staleness_zero(tmp_path, reference):
    done = run_two_ranks(tmp_path, launcher="lightning")  # Trainer(devices=2) starts the second process
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = load_ranks(tmp_path)
    assert_ranks_identical(ranks)
    assert_same_state(ranks[0]["state"], reference["state"])


def test_exact_staleness_two_holds_on_every_rank_with_identical_memory(tmp_path):
    done = run_two_ranks(tmp_path, "--max-staleness", "2", "--mode", "exact")
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = load_ranks(tmp_path)
    for rank in ranks:  # batch j read exactly global version max(0, j − 2)
        assert rank["bound"] == 2 and rank["seen"]
        assert all(index - version == min(index, 2) for index, version in rank["seen"])
    assert_ranks_identical(ranks)


def test_a_raising_rank_stops_both_ranks_with_its_message(tmp_path):
    done = run_two_ranks(tmp_path, "--fail-rank", "1", "--fail-batch", "3", "--timeout", "30", launcher="lightning")
    assert done.returncode != 0
    # rank 0 was waiting in a collective; its error names the rank that failed first and why
    assert re.search(r"RuntimeError: MSPipeDDPStrategy: rank 1: ValueError: injected failure on rank 1 at batch 3 "
                     r"\(that rank failed first; rank 0 stopped because of it", done.stderr), done.stderr[-3000:]
    assert not list(tmp_path.glob("rank*.pt"))  # neither rank finished


def test_under_torchrun_a_raising_rank_ends_the_job(tmp_path):
    done = run_two_ranks(tmp_path, "--fail-rank", "0", "--fail-batch", "2", "--timeout", "30")
    assert done.returncode != 0
    assert "ValueError: injected failure on rank 0 at batch 2" in done.stderr
    assert not list(tmp_path.glob("rank*.pt"))


def test_a_checkpoint_of_two_ranks_continues_on_one_process(tmp_path, torchrun_run, reference):
    (checkpoint,) = torchrun_run.glob(f"checkpoints/*step={STEP_OF_CHECKPOINT}.ckpt")
    resumed = train(tmp_path / "resumed", resume=checkpoint)
    assert resumed["seen"] == reference["seen"][STEP_OF_CHECKPOINT:]
    assert_same_state(resumed["state"], reference["state"])


def test_a_checkpoint_of_one_process_continues_on_two_ranks(tmp_path, reference):
    train(tmp_path / "first", max_steps=STEP_OF_CHECKPOINT, checkpoint_dir=tmp_path / "checkpoints")
    (checkpoint,) = tmp_path.glob(f"checkpoints/*step={STEP_OF_CHECKPOINT}*.ckpt")
    done = run_two_ranks(tmp_path / "resumed", "--resume", str(checkpoint))
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = load_ranks(tmp_path / "resumed")
    assert_ranks_identical(ranks)
    assert ranks[0]["seen"] == reference["seen"][STEP_OF_CHECKPOINT:]
    assert_same_state(ranks[0]["state"], reference["state"])
