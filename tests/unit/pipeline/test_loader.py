"""PipelinedLoader driven by hand (no Trainer): each 'step' commits one memory write, as stage 5 would."""

import pytest
import torch

from lightning_mspipe.pipeline.loader import PipelinedLoader

from tests.unit.pipeline.conftest import commit_write, make_store


def train(pipeline: PipelinedLoader) -> list[tuple[int, int]]:
    """One epoch: (batch index, memory version seen) per batch; the write follows each step."""
    seen = []
    for batch in pipeline:
        seen.append((batch.index, batch.memory.version))
        pipeline.before_write(batch.index)
        commit_write(pipeline.store)
        pipeline.after_write(batch.index, 0.0)
    return seen


@pytest.mark.parametrize("bound", [0, 1, 3])
def test_exact_mode_reads_version_j_minus_s(source, bound):
    pipeline = PipelinedLoader(source, make_store(), max_staleness=bound, mode="exact", timeout=30)
    seen = train(pipeline)
    assert [index for index, _ in seen] == list(range(len(source)))
    assert all(version == max(0, index - bound) for index, version in seen)


@pytest.mark.parametrize("bound", [0, 2])
def test_bounded_mode_stays_within_the_bound_and_ends_its_thread(source, bound):
    pipeline = PipelinedLoader(source, make_store(), max_staleness=bound, timeout=30)
    seen = train(pipeline)
    assert all(0 <= index - version <= bound for index, version in seen)
    assert not pipeline.lane.running()


def test_batches_match_the_unpipelined_source(source):
    pipeline = PipelinedLoader(source, make_store(), max_staleness=2, mode="exact", timeout=30)
    piped = []
    for batch in pipeline:
        piped.append(batch)
        pipeline.before_write(batch.index)
        commit_write(pipeline.store)
    source.set_epoch(0)
    for plain, batch in zip(source, piped, strict=True):
        assert torch.equal(plain.src, batch.src) and torch.equal(plain.neg_dst, batch.neg_dst)
        assert torch.equal(plain.neighbors.nodes, batch.neighbors.nodes)


def test_auto_measures_then_decides(source):
    pipeline = PipelinedLoader(source, make_store(), max_staleness="auto", max_auto_staleness=3, timeout=30)
    seen = train(pipeline)
    assert pipeline.decided and len(pipeline.choices) == 1
    assert 0 <= pipeline.bound <= 3 and pipeline.choices[0]["sample"] > 0
    assert all(index - version <= pipeline.bound for index, version in seen)


def test_state_holds_the_position_and_stale_inflight_snapshots(source):
    pipeline = PipelinedLoader(source, make_store(), max_staleness=2, mode="exact", timeout=30)
    iterator = iter(pipeline)
    for _ in range(3):
        batch = next(iterator)
        pipeline.before_write(batch.index)
        commit_write(pipeline.store)
    state = pipeline.state_dict()  # the producer may have fetched batches 3 and 4 at versions 1 and 2
    pipeline.close()
    assert state["loader"]["next_batch"] == 3
    assert all(int(i) >= 3 and entry["memory"]["version"] < 3 for i, entry in state["inflight"].items())
