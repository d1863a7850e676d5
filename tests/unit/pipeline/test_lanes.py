import threading
import time

import pytest
import torch

from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout
from lightning_mspipe.pipeline.lanes import LaneRun, ProducerLane, shutdown_lanes

CPU = torch.device("cpu")


def lane(timeout=30.0, capacity=2, name="test-lane", role="producer", **kwargs):
    return ProducerLane(name, role, capacity, CPU, timeout, **kwargs)


def lane_threads():
    return [t for t in threading.enumerate() if t.name.startswith("test-")]


def test_items_arrive_in_order_and_the_thread_ends():
    producer, exited = lane(), threading.Event()
    producer.start(lambda index, run: index * 10, 3, 8, on_exit=exited.set)
    assert [producer.take(i) for i in range(3, 8)] == [30, 40, 50, 60, 70]
    assert exited.wait(10)
    producer.shutdown()
    assert not lane_threads()


def test_a_failure_is_re_raised_in_the_taker_naming_stage_and_batch():
    def work(index, run: LaneRun):
        run.enter("features", index)
        if index == 2:
            raise OSError("disk unplugged")
        return index

    producer = lane()
    producer.start(work, 0, 5, on_exit=lambda: None)
    assert producer.take(0) == 0 and producer.take(1) == 1
    with pytest.raises(PipelineError, match=r"stage 'features' failed on batch 2: OSError: disk unplugged"):
        producer.take(2)
    producer.shutdown()
    assert not lane_threads()


def test_a_slow_item_times_out_naming_the_stage():
    def work(index, run: LaneRun):
        run.enter("sample", index)
        run.stop.wait(60)  # cooperative hang
        return index

    producer = lane(timeout=0.2, describe=lambda: " (memory version 7)")
    producer.start(work, 4, 6, on_exit=lambda: None)
    with pytest.raises(PipelineTimeout, match=r"training waited 0.2s for batch 4; the producer is in stage 'sample' of batch 4 \(memory version 7\)"):
        producer.take(4)
    producer.shutdown()
    assert not lane_threads()


def test_shutdown_unblocks_a_thread_waiting_on_a_full_queue():
    producer, exited = lane(capacity=1), threading.Event()
    producer.start(lambda index, run: index, 0, 1000, on_exit=exited.set)
    assert producer.take(0) == 0
    producer.shutdown()
    assert exited.is_set() and not lane_threads() and not producer.running()


def test_a_restart_gives_the_new_run_its_own_stop_flag():
    runs = []

    def work(index, run):
        runs.append(run)
        return index

    producer = lane()
    producer.start(work, 0, 1, on_exit=lambda: None)
    producer.take(0)
    producer.start(work, 0, 1, on_exit=lambda: None)  # shuts the first run down
    producer.take(0)
    producer.shutdown()
    assert runs[0] is not runs[1] and runs[0].stop.is_set()


def test_a_thread_stuck_in_an_uninterruptible_call_does_not_freeze_shutdown():
    release = threading.Event()

    def work(index, run: LaneRun):
        run.enter("sample", index)
        if index == 1:
            release.wait(60)  # like a C call: deaf to the stop flag
        return index

    producer = lane(join_timeout=0.2)
    producer.start(work, 0, 3, on_exit=lambda: None)
    assert producer.take(0) == 0
    with pytest.warns(RuntimeWarning, match=r"did not stop within 0.2s; it is in stage 'sample' of batch 1"):
        producer.shutdown()
    release.set()
    for thread in lane_threads():
        thread.join(10)
    assert not lane_threads()


def test_a_failing_thread_set_up_is_reported_as_a_stage(monkeypatch):
    def broken(threads):
        raise RuntimeError("no OpenMP")

    monkeypatch.setattr(torch, "set_num_threads", broken)
    producer = lane()
    producer.start(lambda index, run: index, 0, 2, on_exit=lambda: None)
    with pytest.raises(PipelineError, match=r"stage 'thread set-up' failed on batch 0: RuntimeError: no OpenMP"):
        producer.take(0)
    producer.shutdown()


def test_the_thread_restores_its_intra_op_thread_count(monkeypatch):
    calls, real = [], torch.set_num_threads
    before = torch.get_num_threads()

    def recording(threads):
        calls.append(threads)
        real(threads)

    monkeypatch.setattr(torch, "set_num_threads", recording)
    producer, exited = lane(), threading.Event()
    producer.start(lambda index, run: torch.get_num_threads(), 0, 1, on_exit=exited.set)
    assert producer.take(0) == 1  # one intra-op thread while it works
    assert exited.wait(10)
    producer.shutdown()
    assert calls == [1, before]  # restored, whether the setting is per thread (OpenMP) or shared


def chained(sampler_work=lambda index, run: index, timeout=30.0, capacity=2, join_timeout=5.0):
    """A sampler lane and a fetcher lane that takes the sampler's items (as the pipeline chains them)."""
    sampler = lane(timeout, capacity, "test-sampler", "sampler", join_timeout=join_timeout)
    fetcher = lane(timeout, capacity, "test-fetcher", "fetcher", join_timeout=join_timeout,
                   describe=lambda: f" ({sampler.where()})")

    def fetch(index, run: LaneRun):
        run.enter("wait for the sampler", index)
        item = sampler.take(index, check=run.raise_if_stopped, waiter="the fetcher")
        run.enter("features", index)
        return item + 0.5

    return sampler, fetcher, fetch, sampler_work


def test_a_fetcher_lane_takes_the_sampler_lanes_items_in_order():
    sampler, fetcher, fetch, sample = chained()
    sampler.start(sample, 2, 7, on_exit=lambda: None)
    fetcher.start(fetch, 2, 7, on_exit=lambda: None)
    assert [fetcher.take(i) for i in range(2, 7)] == [2.5, 3.5, 4.5, 5.5, 6.5]
    shutdown_lanes([fetcher, sampler], 5.0)
    assert not lane_threads()


def test_the_sampler_runs_ahead_by_at_most_its_capacity():
    started = []

    def sample(index, run):
        started.append(index)
        return index

    sampler, fetcher, _, _ = chained(capacity=3)
    sampler.start(sample, 0, 100, on_exit=lambda: None)
    time.sleep(0.3)  # nothing takes: the sampler fills its queue and waits
    assert started == [0, 1, 2, 3]  # 3 queued, the 4th done and waiting for room
    shutdown_lanes([fetcher, sampler], 5.0)
    assert not lane_threads()


def test_a_sampler_failure_reaches_the_training_thread_through_the_fetcher():
    def sample(index, run: LaneRun):
        run.enter("sample", index)
        if index == 1:
            raise ValueError("bad neighbour table")
        return index

    sampler, fetcher, fetch, _ = chained()
    sampler.start(sample, 0, 4, on_exit=lambda: None)
    fetcher.start(fetch, 0, 4, on_exit=lambda: None)
    assert fetcher.take(0) == 0.5
    with pytest.raises(PipelineError, match=r"stage 'sample' failed on batch 1: ValueError: bad neighbour table"):
        fetcher.take(1)
    shutdown_lanes([fetcher, sampler], 5.0)
    assert not lane_threads()


def test_a_hanging_sampler_times_out_naming_its_stage():
    def sample(index, run: LaneRun):
        run.enter("sample", index)
        if index == 1:
            run.stop.wait(60)  # cooperative hang
        return index

    sampler, fetcher, fetch, _ = chained(timeout=0.3)
    sampler.start(sample, 0, 4, on_exit=lambda: None)
    fetcher.start(fetch, 0, 4, on_exit=lambda: None)
    assert fetcher.take(0) == 0.5
    # the fetcher's own wait for the sampler, or training's wait for the fetcher: both name the sampler's stage
    with pytest.raises(PipelineTimeout, match=r"waited 0.3s for batch 1; .*the sampler is in stage 'sample' of batch 1"):
        fetcher.take(1)
    shutdown_lanes([fetcher, sampler], 5.0)
    assert not lane_threads()


def test_shutting_down_chained_lanes_stops_a_fetcher_waiting_for_the_sampler():
    entered, release = threading.Event(), threading.Event()

    def sample(index, run: LaneRun):
        run.enter("sample", index)
        if index == 1:
            entered.set()
            release.wait(60)  # stuck: the fetcher waits for batch 1 from it
        return index

    sampler, fetcher, fetch, _ = chained(join_timeout=0.3)
    sampler.start(sample, 0, 4, on_exit=lambda: None)
    fetcher.start(fetch, 0, 4, on_exit=lambda: None)
    assert fetcher.take(0) == 0.5 and entered.wait(10)
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match=r"sampler thread \(test-sampler\) did not stop within 0.3s"):
        shutdown_lanes([fetcher, sampler], 0.3)
    assert time.monotonic() - started < 5  # one deadline for both lanes, not one per lane after another
    assert not [t for t in lane_threads() if t.name == "test-fetcher"]  # the fetcher left its wait at once
    release.set()
    for thread in lane_threads():
        thread.join(10)
    assert not lane_threads()


def test_lanes_ending_out_of_order_restore_a_shared_intra_op_setting(monkeypatch):
    shared = {"threads": 4}  # a thread-pool backend whose setting the main thread shares
    monkeypatch.setattr(torch, "get_num_threads", lambda: shared["threads"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: shared.update(threads=n))
    release_first, first_done = threading.Event(), threading.Event()
    first, second = lane(name="test-first"), lane(name="test-second")
    first.start(lambda index, run: release_first.wait(10), 0, 1, on_exit=first_done.set)
    second.start(lambda index, run: index, 0, 1, on_exit=lambda: None)
    assert second.take(0) == 0
    second.shutdown()  # the second lane ends first, while the first still works
    assert shared["threads"] == 1
    release_first.set()
    assert first.take(0) is True and first_done.wait(10)
    first.shutdown()
    assert shared["threads"] == 4  # per-thread restores would have left 1
