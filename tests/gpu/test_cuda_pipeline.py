"""GPU checks of the pipeline (run by bench/gpu_suite.sh on a machine with CUDA; not in the CPU test run)."""

import pytest
import torch

from lightning_mspipe import MSPipeStrategy, StalenessGuard
from lightning_mspipe.models import TGN

from tests.integration.test_pipeline import fit, no_pipeline_threads

if not torch.cuda.is_available():
    pytest.fail("tests/gpu needs a CUDA device; run it through bench/gpu_suite.sh on a GPU machine", pytrace=False)

GPU = dict(accelerator="gpu", devices=1)


@pytest.mark.parametrize("memory_device", [None, "pinned"])
def test_staleness_zero_matches_plain_training_on_cuda(memory_device):
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    plain, plain_rec, _ = fit(TGN, "auto", **GPU)
    piped, piped_rec, trainer = fit(TGN, MSPipeStrategy(max_staleness=0, memory_device=memory_device), **GPU)
    assert trainer.strategy.root_device.type == "cuda"
    if memory_device == "pinned":
        assert piped.memory.memory.device.type == "cpu" and piped.memory.memory.is_pinned()
    assert piped_rec.losses == pytest.approx(plain_rec.losses, rel=1e-5, abs=1e-6)


def test_exact_mode_is_reproducible_on_cuda_with_pinned_memory():
    runs = [fit(TGN, MSPipeStrategy(max_staleness=2, mode="exact", memory_device="pinned"), **GPU) for _ in range(2)]
    (a, rec_a, _), (b, rec_b, _) = runs
    assert rec_a.losses == pytest.approx(rec_b.losses, rel=1e-5, abs=1e-6)
    assert all(index - version == min(index, 2) for index, version in rec_a.seen)


@pytest.mark.parametrize("bound", [1, 3])
def test_bounded_mode_respects_the_bound_on_cuda(bound):
    guard = StalenessGuard()
    fit(TGN, MSPipeStrategy(max_staleness=bound, memory_device="pinned"), callbacks=[guard], precision="bf16-mixed", **GPU)
    assert max(guard.histogram) <= bound
    assert no_pipeline_threads()
