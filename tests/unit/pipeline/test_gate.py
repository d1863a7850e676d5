import threading
import time

import pytest

from lightning_mspipe.pipeline.errors import PipelineTimeout, Stopped
from lightning_mspipe.pipeline.gate import StalenessGate, fetch_delay
from lightning_mspipe.pipeline.lanes import LaneRun
from lightning_mspipe.pipeline.schedule import StageTimes

from tests.unit.pipeline.conftest import commit_write, make_store, stub_batch

NO_TIMES = lambda: StageTimes(0, 0, 0, 0, 0)  # noqa: E731


def in_thread(fn):
    """Run ``fn`` in a thread; return (thread, outcome list filled with 'done' or the exception)."""
    outcome = []

    def target():
        try:
            fn()
            outcome.append("done")
        except BaseException as error:  # noqa: BLE001 - reported to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("mode", ["bounded", "exact"])
def test_the_fetch_of_batch_j_waits_for_version_j_minus_s(mode):
    store = make_store()
    gate = StalenessGate(store, bound=2, mode=mode, timeout=30)
    commit_write(store)  # version 1: batch 4 needs 2
    gate.mark_taken(3, at=0.0)  # bounded: batch 3 is long in training, so no delay after the gate
    thread, outcome = in_thread(lambda: gate.wait_to_fetch(4, LaneRun(), NO_TIMES))
    thread.join(0.2)
    assert thread.is_alive() and not outcome  # closed at version 1
    commit_write(store)
    thread.join(10)
    assert outcome == ["done"]


def test_exact_mode_fetches_as_soon_as_the_gate_opens_even_if_fresher_memory_will_come():
    store = make_store()
    gate = StalenessGate(store, bound=3, mode="exact", timeout=30)
    gate.wait_to_fetch(3, LaneRun(), NO_TIMES)  # version 0 ≥ 3 − 3: returns at once
    assert store.current_version == 0


def test_a_closed_gate_times_out_naming_batch_and_version():
    gate = StalenessGate(make_store(), bound=0, mode="bounded", timeout=0.2, writer_state=lambda: "the writer is idle")
    with pytest.raises(PipelineTimeout, match=r"batch 2 waited 0.2s at the staleness gate for memory version 2 "
                                              r"\(it is 0; the writer is idle\)"):
        gate.wait_to_fetch(2, LaneRun(), NO_TIMES)


def test_a_stopped_run_leaves_the_gate():
    gate = StalenessGate(make_store(), bound=0, mode="bounded", timeout=30)
    run = LaneRun()
    thread, outcome = in_thread(lambda: gate.wait_to_fetch(1, run, NO_TIMES))
    run.stop.set()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)


def test_exact_mode_holds_the_write_of_i_until_batch_i_plus_s_is_fetched():
    gate = StalenessGate(make_store(), bound=2, mode="exact", timeout=30)
    gate.start_segment(end=10)
    thread, outcome = in_thread(lambda: gate.hold_write(0))
    gate.mark_fetched(stub_batch(1))
    thread.join(0.2)
    assert thread.is_alive() and not outcome
    gate.mark_fetched(stub_batch(2))
    thread.join(10)
    assert outcome == ["done"]


def test_exact_hold_is_released_when_the_fetcher_ends_and_capped_at_the_segment_end():
    gate = StalenessGate(make_store(), bound=5, mode="exact", timeout=30)
    gate.start_segment(end=3)
    gate.mark_fetched(stub_batch(2))
    gate.hold_write(1)  # needs min(1 + 5, 3 − 1) = 2: already fetched
    thread, outcome = in_thread(lambda: gate.hold_write(2))  # would need 7 without the cap
    thread.join(10)
    assert outcome == ["done"]
    gate.start_segment(end=10)
    thread, outcome = in_thread(lambda: gate.hold_write(3))
    gate.end_segment()
    thread.join(10)
    assert outcome == ["done"]


def test_exact_hold_times_out_with_a_message():
    gate = StalenessGate(make_store(), bound=1, mode="exact", timeout=0.2)
    gate.start_segment(end=10)
    with pytest.raises(PipelineTimeout, match=r"write of batch 4 waited 0.2s for batch 5 to read memory version 4"):
        gate.hold_write(4)


def test_bounded_mode_does_not_hold_writes():
    gate = StalenessGate(make_store(), bound=2, mode="bounded", timeout=0.2)
    gate.start_segment(end=10)
    gate.hold_write(0)  # returns at once: nothing fetched, no timeout


def test_inflight_batches_are_the_fetched_not_yet_taken_ones():
    gate = StalenessGate(make_store(), bound=2, mode="bounded", timeout=30)
    for index in range(3):
        gate.mark_fetched(stub_batch(index))
    gate.mark_taken(0, at=0.0)
    assert sorted(b.index for b in gate.inflight()) == [1, 2]
    gate.reset()
    assert gate.inflight() == []


def test_the_bounded_fetch_starts_at_its_latest_non_stalling_start():
    # training asks for batch j at τ4 = 10 after batch j − 1 was handed over (its write, τ5, runs on the
    # writer lane); the fetch takes τ3 = 3: latest start 7, less the margin 0.1 · τ4 = 1 (τ3 subtracted once)
    times = StageTimes(sample=1.0, features=2.0, memory=3.0, train=10.0, write=4.0)
    assert fetch_delay(times) == pytest.approx(6.0)
    assert fetch_delay(times, slack=0.0) == pytest.approx(7.0)


def test_bounded_mode_waits_for_fresher_memory_until_it_is_fully_fresh():
    store = make_store()
    gate = StalenessGate(store, bound=2, mode="bounded", timeout=30)
    commit_write(store)  # version 1 ≥ 3 − 2: the gate is open, but fresher memory is coming
    gate.mark_taken(2, at=time.perf_counter())
    long_step = lambda: StageTimes(0, 0, 0, train=60.0, write=0)  # noqa: E731 - latest start in 54 s
    thread, outcome = in_thread(lambda: gate.wait_to_fetch(3, LaneRun(), long_step))
    commit_write(store)
    thread.join(0.2)
    assert thread.is_alive() and not outcome  # version 2: not yet fresh
    commit_write(store)  # version 3: every write before batch 3 is in
    thread.join(10)
    assert outcome == ["done"]


def test_bounded_mode_fetches_stale_memory_once_its_latest_start_has_passed():
    store = make_store()
    gate = StalenessGate(store, bound=2, mode="bounded", timeout=30)
    gate.mark_taken(1, at=time.perf_counter() - 100.0)  # batch 1 trained long ago: no time left to wait
    gate.wait_to_fetch(2, LaneRun(), lambda: StageTimes(0, 0, 1.0, 10.0, 1.0))  # latest start 8 s after
    assert store.current_version == 0


SLOW_POLL = 30.0  # the gate's periodic re-check: far longer than any wake-up the tests wait for


def assert_woken_by(action, wait) -> None:
    """``wait`` blocks at the gate until ``action`` runs, then ends well before the 30 s poll could end it."""
    thread, outcome = in_thread(wait)
    thread.join(0.2)
    assert thread.is_alive() and not outcome  # blocked at the gate
    action()
    thread.join(10)  # 10 s < SLOW_POLL: only the action's notification can have ended the wait
    assert outcome == ["done"]


def test_a_hand_over_wakes_a_bounded_fetch_waiting_for_it_at_once():
    store = make_store()
    gate = StalenessGate(store, bound=2, mode="bounded", timeout=60, poll=SLOW_POLL)
    commit_write(store)  # version 1 ≥ 3 − 2: the gate is open, the version then stalls
    no_wait = lambda: StageTimes(0, 0, 0, 0, 0)  # noqa: E731 - the latest start is the hand-over itself
    assert_woken_by(lambda: gate.mark_taken(2, at=time.perf_counter()),  # waits for batch 2's hand-over
                    lambda: gate.wait_to_fetch(3, LaneRun(), no_wait))
    assert store.current_version == 1


def test_a_new_version_wakes_a_fetch_at_the_gate_at_once():
    store = make_store()
    gate = StalenessGate(store, bound=0, mode="bounded", timeout=60, poll=SLOW_POLL)
    assert_woken_by(lambda: commit_write(store), lambda: gate.wait_to_fetch(1, LaneRun(), NO_TIMES))


def test_a_new_version_wakes_a_bounded_fetch_waiting_for_fresher_memory():
    store = make_store()
    gate = StalenessGate(store, bound=1, mode="bounded", timeout=60, poll=SLOW_POLL)
    commit_write(store)  # version 1 ≥ 2 − 1: open; waits for version 2 or the latest start (60 s away)
    gate.mark_taken(1, at=time.perf_counter())
    long_step = lambda: StageTimes(0, 0, 0, train=100.0, write=0)  # noqa: E731
    assert_woken_by(lambda: commit_write(store), lambda: gate.wait_to_fetch(2, LaneRun(), long_step))
