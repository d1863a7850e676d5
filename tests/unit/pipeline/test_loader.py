"""PipelinedLoader driven by hand (no Trainer): each 'step' commits one memory write, as stage 5 would."""

import time

import pytest
import torch

from lightning_mspipe.pipeline.auto import DISCARD, AutoBound
from lightning_mspipe.pipeline.loader import PipelinedLoader

from tests.unit.pipeline.conftest import make_store, node_write


def train(pipeline: PipelinedLoader) -> list[tuple[int, int]]:
    """One epoch: (batch index, memory version seen) per batch; the write follows each step."""
    seen = []
    for batch in pipeline:
        seen.append((batch.index, batch.memory.version))
        pipeline.submit_write(batch.index, node_write(value=float(batch.index)))
    pipeline.flush_writes()  # the model does this at the epoch's end
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
    assert not pipeline.sampler.running() and not pipeline.fetcher.running()


def test_batches_match_the_unpipelined_source(source):
    pipeline = PipelinedLoader(source, make_store(), max_staleness=2, mode="exact", timeout=30)
    piped = []
    for batch in pipeline:
        piped.append(batch)
        pipeline.submit_write(batch.index, node_write())
    pipeline.flush_writes()
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
        pipeline.submit_write(batch.index, node_write())
    pipeline.flush_writes()  # the strategy does this before a checkpoint
    state = pipeline.state_dict()  # the fetcher may have fetched batches 3 and 4 at versions 1 and 2
    pipeline.close()
    assert state["loader"]["next_batch"] == 3
    assert all(int(i) >= 3 and entry["memory"]["version"] < 3 for i, entry in state["inflight"].items())


def test_the_auto_estimate_leaves_out_the_first_batch_of_the_phase(source, monkeypatch):
    sample = source.sample

    def first_sample_pays_a_one_time_cost(index):
        if index == 0:
            time.sleep(0.3)
        return sample(index)

    monkeypatch.setattr(source, "sample", first_sample_pays_a_one_time_cost)
    length = AutoBound(maximum=3).phase_length(len(source))
    pipeline = PipelinedLoader(source, make_store(), max_staleness="auto", max_auto_staleness=3, timeout=30,
                               max_batches=lambda: length)  # the inline phase only
    train(pipeline)
    (choice,) = pipeline.choices
    assert choice["sample"] == pytest.approx(pipeline.profile.mean("sample", last=length - DISCARD))
    assert choice["sample"] < pipeline.profile.mean("sample")  # batch 0's 0.3 s is not in it


def test_auto_brackets_the_pipelined_phase_with_two_inline_phases(source, monkeypatch):
    # the whole first inline phase pays a warm-up cost (an allocator growing, caches filling) that later
    # batches do not: compared with it alone, any pipeline would look faster
    sample, length = source.sample, AutoBound(maximum=3).phase_length(len(source))
    assert len(source) >= 3 * length

    def warm_up(index):
        if index < length:
            time.sleep(0.05)
        return sample(index)

    monkeypatch.setattr(source, "sample", warm_up)
    pipeline = PipelinedLoader(source, make_store(), max_staleness="auto", max_auto_staleness=3, timeout=30,
                               max_batches=lambda: 3 * length)
    modes, staleness = [], []
    for batch in pipeline:
        modes.append(pipeline.threaded_now)
        staleness.append(batch.index - batch.memory.version)
        pipeline.submit_write(batch.index, node_write())
    pipeline.flush_writes()
    assert modes == [False] * length + [True] * length + [False] * length
    assert staleness[2 * length:] == [0] * length  # inline again: the pipelined phase's last writes were awaited
    (choice,) = pipeline.choices
    warm, settled = choice["inline_phase_periods"]  # the first phase slept 50 ms in every batch but one
    assert warm > settled and choice["inline_period"] == settled  # compared with the faster, settled phase


def checkpoint_after(source, bound, batches, **kwargs):
    """State of a pipeline with ``bound`` after training ``batches`` batches (exact mode), and its store."""
    pipeline = PipelinedLoader(source, make_store(), max_staleness=bound, mode="exact", timeout=30, **kwargs)
    iterator = iter(pipeline)
    for _ in range(batches):
        batch = next(iterator)
        pipeline.submit_write(batch.index, node_write())
    pipeline.flush_writes()  # the strategy does this before a checkpoint
    # exact mode: the write of batch i waited until batch i + bound was fetched, so batches 3 … 2 + bound are in flight
    state = pipeline.state_dict()
    pipeline.close()
    return state, pipeline.store


def resume(source, state, store, **kwargs):
    pipeline = PipelinedLoader(source, store, timeout=30, **kwargs)
    pipeline.load_state_dict(state)
    return pipeline


def test_a_resume_with_the_same_bound_keeps_the_inflight_snapshots(source):
    state, store = checkpoint_after(source, bound=2, batches=3)
    assert state["inflight"] and state["max_staleness"] == 2
    pipeline = resume(source, state, store, max_staleness=2, mode="exact")
    seen = train(pipeline)
    assert seen[0] == (3, 1)  # batch 3 trains on the snapshot taken at version 1, as without the checkpoint


def test_a_resume_with_another_bound_keeps_the_new_bound_says_so_and_refetches(source):
    state, store = checkpoint_after(source, bound=2, batches=3)
    with pytest.warns(UserWarning, match=r"trained with max_staleness=2; this run keeps its own max_staleness=1"):
        pipeline = resume(source, state, store, max_staleness=1, mode="exact")
    seen = train(pipeline)
    assert pipeline.bound == 1 and seen[0][0] == 3
    assert all(index - version <= 1 for index, version in seen)  # the stale-by-2 snapshots were dropped


def test_a_resumed_auto_run_keeps_the_checkpoints_choice(source):
    first = PipelinedLoader(source, make_store(), max_staleness="auto", max_auto_staleness=3, timeout=30)
    train(first)
    state = first.state_dict()
    assert state["auto"]["decided"] and state["auto"]["inputs"]["train"] > 0
    resumed = resume(source, state, make_store(), max_staleness="auto", max_auto_staleness=3)
    assert (resumed.bound, resumed.threaded, resumed.decided) == (first.bound, first.threaded, True)
    train(resumed)  # no stage times of its own yet at its first epoch start: no re-estimate from zeros
    assert resumed.choices == first.choices


def test_without_kept_snapshots_the_state_has_none_and_a_resume_refetches(source):
    unkept, _ = checkpoint_after(source, bound=2, batches=3, keep_inflight=False)
    assert unkept["inflight"] == {}  # batches 3 and 4 are in flight, but their snapshots are per rank under DDP
    state, store = checkpoint_after(source, bound=2, batches=3)  # a one-process checkpoint with snapshots
    seen = train(resume(source, state, store, max_staleness=2, mode="exact", keep_inflight=False))
    assert seen[0] == (3, 3)  # batch 3 fetched memory again, at the checkpoint's version


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_sampler_lane_runs_ahead_while_the_fetcher_waits_at_the_gate(source):
    pipeline = PipelinedLoader(source, make_store(), max_staleness=0, timeout=30)
    try:
        iterator = iter(pipeline)
        first = next(iterator)  # no write yet: the fetch of batch 1 waits for version 1
        # the sampler does not wait for memory: batch 1 went to the fetcher, 2 and 3 fill its queue (s + 2), 4 waits
        # for room; the fetcher fetched batch 1's features, then stopped at the gate
        profile = pipeline.profile
        assert wait_until(lambda: profile.count("sample") == 5 and profile.count("features") == 2)
        time.sleep(0.2)  # time to run further, were anything not held back
        assert (profile.count("sample"), profile.count("features"), profile.count("memory")) == (5, 2, 1)
        pipeline.submit_write(first.index, node_write())
        assert next(iterator).index == 1
    finally:
        pipeline.close()


def test_sampling_overlaps_fetching(source):
    # τ1 = τ2 = 40 ms of waiting (no CPU); one thread for both stages could never run them at once
    spans: dict[str, list[tuple[float, float]]] = {"sample": [], "features": []}

    def slow(stage, index, stop):
        if stage in spans:
            begin = time.monotonic()
            time.sleep(0.04)
            spans[stage].append((begin, time.monotonic()))

    pipeline = PipelinedLoader(source, make_store(), max_staleness=2, mode="exact", timeout=30, fault_hook=slow)
    train(pipeline)
    overlapping = [(a, b) for a in spans["sample"] for b in spans["features"] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, "stages 1 and 2 never ran at the same time"


def test_auto_measures_inline_and_pipelined_again_when_stage_times_drift(source, monkeypatch):
    slow, fetch_features = {"features": False}, source.fetch_features

    def features(batch):
        if slow["features"]:
            time.sleep(0.02)  # the link got slower: τ2 grows by 20 ms
        return fetch_features(batch)

    monkeypatch.setattr(source, "fetch_features", features)
    pipeline = PipelinedLoader(source, make_store(), max_staleness="auto", max_auto_staleness=3, timeout=30)

    def epoch():
        pipeline.store.reset()  # the model resets memory at every epoch start
        train(pipeline)

    epoch()
    assert pipeline.decided and len(pipeline.choices) == 1
    slow["features"] = True
    epoch()  # epoch 1 is slow; its start still saw epoch 0's times
    assert len(pipeline.choices) == 1
    epoch()  # epoch 2 starts with the drift in view: measure both ways again
    drift, decision = pipeline.choices[1:]
    assert "drifted" in drift["reason"] and "inline_period" in decision
    assert decision["features"] >= 0.02 and pipeline.decided  # measured again: the 20 ms are in it
