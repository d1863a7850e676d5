"""GPU checks of the pipeline, run by bench/gpu_suite.sh on a machine with CUDA (not in the CPU test run).

``MSPIPE_TEST_DEVICE=cpu`` runs the same tests on a CPU: the suite's dry run (``bash
bench/gpu_suite.sh --device cpu``) uses it to check that they run at all.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_mspipe import APAN, JODIE, TGN, MSPipeStrategy, StalenessGuard
from lightning_mspipe.data.batch import tensors_of
from lightning_mspipe.memory import MemoryStore, MemoryWrite
from lightning_mspipe.pipeline.errors import PipelineError
from lightning_mspipe.pipeline.loader import PipelinedLoader
from lightning_mspipe.pipeline.stages import fetch_memory
from lightning_mspipe.pipeline.transfer import CudaTransfer, HostTransfer

from tests.conftest import small_datamodule
from tests.integration.test_pipeline import assert_same_model, fit

DEVICE = os.environ.get("MSPIPE_TEST_DEVICE", "cuda")
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.fail("tests/gpu needs a CUDA device; run it through bench/gpu_suite.sh on a GPU machine "
                "(MSPIPE_TEST_DEVICE=cpu runs it on a CPU)", pytrace=False)
CUDA = DEVICE == "cuda"
ON_DEVICE = dict(accelerator="gpu" if CUDA else "cpu", devices=1)
STORES = [None, "pinned"]  # memory with the model (on the GPU) or in pinned host memory
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def deterministic():
    """Deterministic kernels where CUDA has them (warn where it has not), restored afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic = before[1]


def assert_pinned_store(model, memory_device):
    if memory_device == "pinned":
        assert model.memory.memory.device.type == "cpu"
        assert model.memory.memory.is_pinned() or not CUDA


@pytest.mark.parametrize("memory_device", STORES)
def test_staleness_zero_is_bit_identical_to_plain_training(deterministic, memory_device):
    plain, plain_rec, _ = fit(TGN, "auto", **ON_DEVICE)
    _, again_rec, _ = fit(TGN, "auto", **ON_DEVICE)
    piped, piped_rec, trainer = fit(TGN, MSPipeStrategy(max_staleness=0, memory_device=memory_device), **ON_DEVICE)
    assert trainer.strategy.root_device.type == DEVICE and trainer.strategy.pipeline is not None
    assert_pinned_store(piped, memory_device)
    if again_rec.losses == plain_rec.losses:  # the model is deterministic on this device: demand bit-identity
        assert piped_rec.losses == plain_rec.losses
        assert_same_model(plain, piped)
    else:  # kernels with atomics (scatter softmax) differ from run to run even without the pipeline
        assert piped_rec.losses == pytest.approx(plain_rec.losses, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("memory_device", STORES)
def test_exact_mode_is_reproducible(memory_device):
    runs = [fit(TGN, MSPipeStrategy(max_staleness=2, mode="exact", memory_device=memory_device), **ON_DEVICE)
            for _ in range(2)]
    (_, rec_a, _), (_, rec_b, _) = runs
    assert rec_a.losses == pytest.approx(rec_b.losses, rel=1e-5, abs=1e-6)
    assert all(index - version == min(index, 2) for index, version in rec_a.seen)


@pytest.mark.parametrize(("model_cls", "memory_device", "bound", "precision"), [
    (TGN, "pinned", 3, "bf16-mixed"), (TGN, None, 1, "32-true"), (JODIE, "pinned", 1, "32-true"),
    (APAN, None, 2, "32-true"),
])
def test_bounded_mode_respects_the_bound(model_cls, memory_device, bound, precision, leaked_threads):
    guard = StalenessGuard()
    _, _, trainer = fit(model_cls, MSPipeStrategy(max_staleness=bound, memory_device=memory_device),
                        callbacks=[guard], precision=precision, **ON_DEVICE)
    assert max(guard.histogram) <= bound and sum(guard.histogram.values()) == 20
    times = trainer.strategy.pipeline.profile.stage_times()  # on CUDA from CUDA events
    assert min(times.as_dict().values()) > 0
    assert not leaked_threads()


def device_write(index: int, num_nodes: int, device: torch.device) -> MemoryWrite:
    """Batch ``index``'s write of one node (``index`` mod N), computed on the compute device."""
    node = torch.tensor([index % num_nodes], device=device)
    ones = torch.ones(1, dtype=torch.float64, device=device)
    return MemoryWrite(node, torch.full((1, 16), float(index + 1), device=device), ones * index, node,
                       torch.full((1, 8), float(index + 1), device=device), ones * (index + 1))


@pytest.mark.parametrize("memory_device", STORES)
def test_every_batch_reads_exactly_version_j_minus_s_through_the_device_transfer(memory_device, leaked_threads):
    """No Trainer: the fetcher, the staging ring, the writer (and its write-back) on real streams; each
    batch's snapshot equals a sequential replay's at version j − s."""
    dm = small_datamodule()
    dm.setup("fit")
    source, device, bound = dm.train_dataloader(), torch.device(DEVICE), 2
    store = MemoryStore(dm.num_nodes, 16, 8, pin_memory=memory_device == "pinned")
    if memory_device is None:
        store.to(device)
    pipeline = PipelinedLoader(source, store, max_staleness=bound, mode="exact", device=device, timeout=60)
    assert isinstance(pipeline.transfer, CudaTransfer if CUDA else HostTransfer)
    pipeline.set_epoch(0)
    seen = []
    for batch in pipeline:
        seen.append((batch.index, [t.cpu() for t in tensors_of(batch.memory)], batch.memory_index.cpu()))
        pipeline.submit_write(batch.index, device_write(batch.index, dm.num_nodes, device))
    pipeline.flush_writes()
    pipeline.close()
    replay = MemoryStore(dm.num_nodes, 16, 8)
    source.set_epoch(0)
    for index, memory, memory_index in seen:
        while replay.current_version < max(0, index - bound):
            replay.scatter(device_write(replay.current_version, dm.num_nodes, torch.device("cpu")))
        expected = fetch_memory(replay, source.fetch_features(source.sample(index)))
        assert torch.equal(memory_index, expected.memory_index), index
        assert all(torch.equal(a, b) for a, b in zip(memory, tensors_of(expected.memory), strict=True)), index
    assert store.current_version == len(source) and not leaked_threads()


def test_a_mid_epoch_checkpoint_resumes_exactly_with_pinned_memory(tmp_path):
    make = lambda: MSPipeStrategy(max_staleness=2, mode="exact", memory_device="pinned")  # noqa: E731
    _, full_rec, _ = fit(strategy=make(), **ON_DEVICE)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, save_on_train_epoch_end=False)
    fit(strategy=make(), max_steps=4, enable_checkpointing=True, callbacks=[checkpoint], **ON_DEVICE)
    _, resumed_rec, _ = fit(strategy=make(), ckpt_path=next(tmp_path.glob("*step=4*.ckpt")), **ON_DEVICE)
    assert resumed_rec.seen == full_rec.seen[4:]
    assert resumed_rec.losses == pytest.approx(full_rec.losses[4:], rel=1e-5, abs=1e-6)


def test_a_failing_stage_names_stage_and_batch_and_leaves_no_thread(leaked_threads):
    def fail(stage, index, stop):
        if stage == "memory" and index == 3:
            raise RuntimeError("injected")

    strategy = MSPipeStrategy(max_staleness=1, memory_device="pinned")
    strategy.fault_hook = fail
    with pytest.raises(PipelineError, match=r"stage 'memory' failed on batch 3: RuntimeError: injected"):
        fit(strategy=strategy, **ON_DEVICE)
    assert not leaked_threads()


def test_the_distributed_strategy_trains_on_one_device():
    """``strategy="mspipe_ddp"`` with one process (NCCL on a GPU), in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu" / "ddp_smoke.py"), "--device", DEVICE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0 and "mspipe_ddp smoke: ok" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
