"""Properties of the whole pipeline without a Trainer: random delays in every stage (the writer
included) never break the staleness bound or the write order; a hang in any stage ends in a
timeout that names it; no thread outlives the pipeline."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_mspipe.memory.store import MemoryStore
from lightning_mspipe.pipeline.errors import PipelineTimeout
from lightning_mspipe.pipeline.loader import PipelinedLoader
from lightning_mspipe.pipeline.schedule import MODES
from tests.conftest import small_datamodule
from tests.unit.pipeline.conftest import MAIL_DIM, MEMORY_DIM, node_write

STAGES = ("sample", "features", "memory", "write")  # every stage that calls the fault hook


class CommitLog(MemoryStore):
    """A store that records, for each committed write, the batch it came from and the version it made."""

    def __init__(self) -> None:
        super().__init__(300, MEMORY_DIM, MAIL_DIM)
        self.commits: list[tuple[int, int]] = []

    def scatter(self, write, synchronize=False):
        version = super().scatter(write, synchronize)
        self.commits.append((int(write.memory[0, 0]), version))
        return version


@pytest.fixture(scope="module")
def batches():
    dm = small_datamodule()
    dm.setup("fit")
    return dm.train_dataloader()


def random_delays(seed: int, scale: float = 0.003):
    """A fault hook that sleeps a random time (up to ``scale`` seconds) before every stage, and the stages seen."""
    rng, lock, seen = random.Random(seed), threading.Lock(), set()

    def hook(stage, index, stop):
        with lock:
            seen.add(stage)
            delay = rng.random() * scale
        time.sleep(delay)

    return hook, seen



def train(pipeline: PipelinedLoader, step=lambda: None) -> list[tuple[int, int]]:
    """One epoch driven by hand: (batch, memory version seen) per batch; the write follows each step."""
    seen = []
    for batch in pipeline:
        seen.append((batch.index, batch.memory.version))
        step()
        pipeline.submit_write(batch.index, node_write(value=float(batch.index)))
    pipeline.flush_writes()
    return seen


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), bound=st.integers(0, 3), mode=st.sampled_from(MODES))
def test_random_delays_in_every_stage_keep_the_bound_and_the_write_order(batches, seed, bound, mode, leaked_threads):
    hook, stages_delayed = random_delays(seed)
    step_rng = random.Random(seed + 1)
    store = CommitLog()
    bound = 0 if mode == "sequential" else bound  # no lanes: never stale
    pipeline = PipelinedLoader(batches, store, max_staleness=bound, mode=mode, timeout=30, fault_hook=hook)
    seen = train(pipeline, step=lambda: time.sleep(step_rng.random() * 0.003))
    pipeline.close()
    assert stages_delayed == set(STAGES)
    assert [index for index, _ in seen] == list(range(len(batches)))
    assert all(0 <= index - version <= bound for index, version in seen)
    if mode == "exact":
        assert all(version == max(0, index - bound) for index, version in seen)
    assert store.commits == [(index, index + 1) for index in range(len(batches))]  # batch order, one version each
    assert not leaked_threads()


@pytest.mark.timeout(60)  # the deadline: a hang must end in the pipeline's own timeout long before
@pytest.mark.parametrize("stage", STAGES)
def test_a_hang_in_any_stage_ends_in_a_timeout_that_names_it(batches, stage, leaked_threads):
    def hang(name, index, stop):
        if name == stage and index == 2:
            stop.wait(60)  # a hang that ends when the pipeline shuts down

    pipeline = PipelinedLoader(batches, CommitLog(), max_staleness=1, timeout=0.5, fault_hook=hang)
    with pytest.raises(PipelineTimeout, match=rf"waited 0.5s.* stage '{stage}' of batch 2"):
        train(pipeline)
    pipeline.close()
    assert not leaked_threads()
