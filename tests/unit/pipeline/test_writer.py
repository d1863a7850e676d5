import random
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_mspipe.memory.store import MemoryStore, MemoryWrite
from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout
from lightning_mspipe.pipeline.profile import PipelineProfile
from lightning_mspipe.pipeline.writer import WriterLane

from tests.unit.pipeline.conftest import MAIL_DIM, MEMORY_DIM


class RecordingStore(MemoryStore):
    """Records which batch each committed write came from (its memory value) and the version it made."""

    def __init__(self):
        super().__init__(10, MEMORY_DIM, MAIL_DIM)
        self.commits = []

    def scatter(self, write, synchronize=False):
        version = super().scatter(write, synchronize)
        self.commits.append((int(write.memory[0, 0]), version))
        return version


def write_of(index: int) -> MemoryWrite:
    node = torch.tensor([index % 10])
    return MemoryWrite(nodes=node, memory=torch.full((1, MEMORY_DIM), float(index)),
                       last_update=torch.zeros(1, dtype=torch.float64), mail_nodes=node,
                       mail=torch.zeros(1, MAIL_DIM), mail_ts=torch.zeros(1, dtype=torch.float64))


def writer_threads():
    return [t for t in threading.enumerate() if t.name == "mspipe-writer"]


def make_writer(store, timeout=30.0, **kwargs):
    return WriterLane(store, torch.device("cpu"), PipelineProfile(), timeout, **kwargs)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.integers(1, 12))
def test_writes_commit_in_submission_order_under_random_delays(seed, count):
    rng, lock = random.Random(seed), threading.Lock()

    def delay(stage, index, stop):
        with lock:
            seconds = rng.random() * 0.004
        time.sleep(seconds)

    store = RecordingStore()
    writer = make_writer(store, fault_hook=delay)
    for index in range(count):
        writer.submit(index, write_of(index))
        time.sleep(rng.random() * 0.002)  # the training thread's own pace
    writer.flush()
    assert store.commits == [(index, index + 1) for index in range(count)]  # batch order, one version each
    assert writer.profile.count("write") == count
    writer.close()
    assert not writer_threads()


def test_a_write_now_that_fails_names_its_stage_and_batch():
    class BrokenStore(RecordingStore):
        def scatter(self, write, synchronize=False):
            raise OSError("device lost")

    writer = make_writer(BrokenStore())
    with pytest.raises(PipelineError, match=r"stage 'write' failed on batch 7: OSError: device lost") as caught:
        writer.write_now(7, write_of(7))
    assert isinstance(caught.value.__cause__, OSError)
    writer.close()


def test_a_write_now_follows_the_pending_writes_and_runs_on_the_calling_thread():
    store = RecordingStore()
    applied_on = []
    writer = make_writer(store, fault_hook=lambda stage, index, stop: applied_on.append((index, threading.current_thread())))
    for index in range(3):  # pipelined: on the writer thread
        writer.submit(index, write_of(index))
    writer.write_now(3, write_of(3))
    writer.write_now(4, write_of(4))
    assert store.commits == [(index, index + 1) for index in range(5)]
    assert [index for index, thread in applied_on if thread is threading.current_thread()] == [3, 4]
    assert not writer_threads()  # write_now flushed and ended the thread, and started none
    writer.submit(5, write_of(5))
    writer.flush()
    assert store.commits[-1] == (5, 6)


def test_each_write_is_held_until_the_gate_allows_it():
    held, release = [], threading.Event()

    def hold(index):
        held.append(index)
        if index == 1:
            release.wait(30)

    store = RecordingStore()
    writer = make_writer(store, hold=hold)
    for index in range(3):
        writer.submit(index, write_of(index))
    deadline = time.monotonic() + 10
    while held != [0, 1] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held == [0, 1] and store.current_version == 1  # write 1 is held; write 2 waits behind it
    release.set()
    writer.flush()
    assert held == [0, 1, 2] and store.current_version == 3
    writer.close()


def test_a_failed_write_is_re_raised_naming_the_batch():
    submitted = threading.Event()

    class Failing(RecordingStore):
        def scatter(self, write, synchronize=False):
            if int(write.memory[0, 0]) == 2:
                submitted.wait(30)  # fail once all four are submitted (else submit(3) raises first)
                raise RuntimeError("CUDA error: out of memory")
            return super().scatter(write, synchronize)

    writer = make_writer(Failing())
    for index in range(4):
        writer.submit(index, write_of(index))
    submitted.set()
    with pytest.raises(PipelineError, match=r"stage 'write' failed on batch 2: RuntimeError: CUDA error: out of memory"):
        writer.flush()
    with pytest.raises(PipelineError, match=r"batch 2"):
        writer.submit(4, write_of(4))
    writer.close()
    assert not writer_threads()


def test_a_hanging_write_ends_in_a_named_timeout():
    def hang(stage, index, stop):
        if index == 2:
            stop.wait(60)

    store = RecordingStore()
    writer = make_writer(store, timeout=0.3, fault_hook=hang)
    for index in range(4):
        writer.submit(index, write_of(index))
    with pytest.raises(PipelineTimeout, match=r"waited 0.3s for memory writes to complete \(2 pending, memory version 2\); "
                                              r"the writer is in stage 'write' of batch 2"):
        writer.flush()
    writer.close()
    assert not writer_threads() and store.current_version == 2


def test_closing_a_writer_stuck_in_an_uninterruptible_call_warns_and_returns():
    entered, release = threading.Event(), threading.Event()

    def stuck(stage, index, stop):
        entered.set()
        release.wait(60)  # deaf to the stop flag, like a call into C code

    writer = make_writer(RecordingStore(), fault_hook=stuck, join_timeout=0.2)
    writer.submit(0, write_of(0))
    assert entered.wait(10)
    with pytest.warns(RuntimeWarning, match=r"writer thread \(mspipe-writer\) did not stop within 0.2s; it is in stage 'write' of batch 0"):
        writer.close()
    release.set()
    for thread in writer_threads():
        thread.join(10)
    assert not writer_threads()
