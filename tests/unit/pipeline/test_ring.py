"""SlotRing with stand-in events: a slot is never handed out while the event of its last use is pending."""

import threading
import time

import pytest

from lightning_mspipe.pipeline.errors import PipelineTimeout, Stopped
from lightning_mspipe.pipeline.ring import SlotRing


class FakeEvent:
    """An event that completes when the test says so."""

    def __init__(self, done: bool = False):
        self.done = done

    def query(self) -> bool:
        return self.done


def test_the_ring_needs_s_plus_2_slots():
    SlotRing(["a", "b", "c", "d"], bound=2, timeout=1)
    with pytest.raises(ValueError, match=r"3 slots for max_staleness=2; the ring needs at least s \+ 2 = 4"):
        SlotRing(["a", "b", "c"], bound=2, timeout=1)


def test_slots_are_handed_out_in_turn():
    ring = SlotRing(["a", "b"], bound=0, timeout=1)
    handed = []
    for _ in range(4):
        slot, value = ring.acquire()
        handed.append(value)
        ring.release(slot, FakeEvent(done=True))
    assert handed == ["a", "b", "a", "b"]


def test_a_slot_is_never_handed_out_while_its_event_is_pending():
    ring = SlotRing(["a", "b"], bound=0, timeout=30)
    first, _ = ring.acquire()
    copy_of_a = FakeEvent()
    ring.release(first, copy_of_a)
    second, _ = ring.acquire()
    ring.release(second, FakeEvent(done=True))
    got = []
    thread = threading.Thread(target=lambda: got.append(ring.acquire()), daemon=True)
    thread.start()  # slot "a" is next, but its copy is still running
    thread.join(0.2)
    assert thread.is_alive() and not got and ring.pending() == 1
    copy_of_a.done = True
    thread.join(10)
    assert got == [(0, "a")]


def test_a_pending_slot_times_out_with_a_message_and_is_not_lost():
    ring = SlotRing(["a", "b"], bound=0, timeout=0.2, name="fetch")
    events = [FakeEvent(), FakeEvent(done=True)]
    for event in events:
        slot, _ = ring.acquire()
        ring.release(slot, event)
    with pytest.raises(PipelineTimeout, match=r"waited 0.2s for fetch slot 0 \(of 2\) to be free"):
        ring.acquire()
    events[0].done = True
    assert {ring.acquire()[1], ring.acquire()[1]} == {"a", "b"}  # the failed acquire did not keep slot 0


def test_a_waiting_acquire_stops_when_its_lane_stops():
    ring = SlotRing(["a", "b"], bound=0, timeout=30)
    for _ in range(2):
        slot, _ = ring.acquire()
        ring.release(slot, FakeEvent())
    stop = threading.Event()

    def should_stop():
        if stop.is_set():
            raise Stopped

    outcome = []

    def target():
        try:
            ring.acquire(should_stop)
        except Stopped:
            outcome.append("stopped")

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert outcome == ["stopped"]


def test_a_slot_that_is_never_given_back_is_skipped():
    ring = SlotRing(["a", "b", "c"], bound=1, timeout=1)
    ring.acquire()  # a thread left stuck holds slot "a"
    handed = []
    for _ in range(4):
        slot, value = ring.acquire()
        handed.append(value)
        ring.release(slot, None)
    assert handed == ["b", "c", "b", "c"]
    ring.acquire()
    ring.acquire()
    with pytest.raises(RuntimeError, match=r"all 3 slots are held"):
        ring.acquire()


def test_releasing_a_slot_that_was_not_acquired_is_a_bug():
    ring = SlotRing(["a", "b"], bound=0, timeout=1)
    with pytest.raises(RuntimeError, match=r"slot 1 is released but was not acquired"):
        ring.release(1, None)
