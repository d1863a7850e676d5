"""CudaTransfer's logic on a CPU: stand-in streams and events replace CUDA's, plain buffers the pinned ones."""

import threading

import pytest
import torch

from lightning_mspipe.data.batch import tensors_of
from lightning_mspipe.pipeline import transfer as transfer_module
from lightning_mspipe.pipeline.errors import PipelineTimeout
from lightning_mspipe.pipeline.loader import PipelinedLoader
from lightning_mspipe.pipeline.ring import SlotRing
from lightning_mspipe.pipeline.stages import fetch_memory
from lightning_mspipe.pipeline.staging import Arena
from lightning_mspipe.pipeline.transfer import CudaTransfer, HostTransfer, StagingSlot
from tests.unit.pipeline.conftest import commit_write, make_store, node_write

CPU = torch.device("cpu")


class FakeEvent:
    def __init__(self, done=True):
        self.done = done

    def query(self):
        return self.done

    def synchronize(self):
        assert self.done, "a host wait on an event that never completes"


class FakeStreams:
    """Stand-ins for the current stream's operations; records what the transfer asked for."""

    def __init__(self, done=True):
        self.done, self.recorded, self.waits, self.kept = done, [], [], []

    def record(self):
        self.recorded.append(FakeEvent(self.done))
        return self.recorded[-1]

    def wait(self, event):
        self.waits.append(event)

    def stream_key(self):
        return "stream"

    def record_stream(self, batch):
        self.kept.append(batch.index)


def cuda_transfer(bound=1, streams=None, timeout=30.0):
    slots = [StagingSlot(Arena(pin=False), Arena(pin=False)) for _ in range(bound + 2)]
    return CudaTransfer(CPU, SlotRing(slots, bound, timeout), streams or FakeStreams())


def fetched(source, index):
    return source.fetch_features(source.sample(index))


def busy_store():
    store = make_store()
    for node in range(0, 300, 7):
        commit_write(store, node)
    return store


@pytest.mark.parametrize("on_device", [False, True], ids=["store in host memory", "store on the device"])
def test_a_batch_through_the_ring_equals_the_plain_fetch(source, monkeypatch, on_device):
    monkeypatch.setattr(transfer_module, "gathers_on_device", lambda store, device: on_device)
    store, transfer = busy_store(), cuda_transfer()
    batch = transfer.memory(transfer.features(fetched(source, 2), lambda: None), store, None)
    plain = fetch_memory(store, fetched(source, 2))
    assert batch.memory.version == plain.memory.version == store.current_version
    for ours, theirs in zip(tensors_of(batch), tensors_of(plain), strict=True):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert batch.ready_event is transfer.streams.recorded[-1]


def test_a_slot_is_reused_only_after_the_event_of_its_batch(source):
    streams = FakeStreams(done=False)  # copies that have not completed
    transfer, store = cuda_transfer(bound=0, streams=streams), make_store()
    first = transfer.memory(transfer.features(fetched(source, 0), lambda: None), store, None)
    transfer.memory(transfer.features(fetched(source, 1), lambda: None), store, None)
    got = []
    thread = threading.Thread(target=lambda: got.append(transfer.features(fetched(source, 2), lambda: None)),
                              daemon=True)
    thread.start()  # two slots, both copies still running: batch 2 waits for batch 0's slot
    thread.join(0.3)
    assert thread.is_alive() and not got
    first.ready_event.done = True
    thread.join(10)
    assert len(got) == 1


def test_a_slot_whose_copy_never_completes_times_out_naming_it(source):
    transfer, store = cuda_transfer(bound=0, streams=FakeStreams(done=False), timeout=0.2), make_store()
    for index in range(2):
        transfer.memory(transfer.features(fetched(source, index), lambda: None), store, None)
    with pytest.raises(PipelineTimeout, match=r"pinned slots slot 0 \(of 2\) to be free"):
        transfer.features(fetched(source, 2), lambda: None)


def test_an_abandoned_batch_gives_its_slot_back(source):
    transfer = cuda_transfer(bound=0)
    for index in range(5):  # two slots: without abandon the third features() would find none free
        transfer.abandon(transfer.features(fetched(source, index), lambda: None))


def test_the_hand_over_waits_for_the_batchs_event_and_marks_its_tensors():
    transfer, batch = cuda_transfer(), type("B", (), {"ready_event": FakeEvent(), "index": 7})()
    assert transfer.hand_over(batch) is batch
    assert transfer.streams.waits == [batch.ready_event] and transfer.streams.kept == [7]


def test_a_restored_snapshot_skips_the_gather(source):
    transfer, store = cuda_transfer(), busy_store()
    restored = fetch_memory(store, fetched(source, 3))
    batch = transfer.memory(transfer.features(fetched(source, 3), lambda: None), make_store(), (restored.memory,
                                                                                                 restored.memory_index))
    assert batch.memory is restored.memory and batch.ready_event is not None


def epoch_of_snapshots(pipeline):
    """One exact-mode epoch: per batch, its memory snapshot's tensors and index; each write changes memory."""
    seen = []
    pipeline.set_epoch(0)  # both runs draw the same negatives
    for batch in pipeline:
        seen.append([t.clone() for t in tensors_of(batch)])
        pipeline.submit_write(batch.index, node_write(node=batch.index, value=float(batch.index + 1)))
    pipeline.flush_writes()
    pipeline.close()
    return seen


@pytest.mark.parametrize("on_device", [False, True], ids=["store in host memory", "store on the device"])
def test_the_pipeline_through_the_cuda_transfer_trains_on_what_the_host_transfer_gives(source, monkeypatch, on_device):
    plain = PipelinedLoader(source, make_store(), max_staleness=2, mode="exact", timeout=30)
    assert isinstance(plain.transfer, HostTransfer)
    expected = epoch_of_snapshots(plain)
    monkeypatch.setattr(transfer_module, "gathers_on_device", lambda store, device: on_device)
    staged = PipelinedLoader(source, make_store(), max_staleness=2, mode="exact", timeout=30)
    staged.transfer = cuda_transfer(bound=2)
    got = epoch_of_snapshots(staged)
    assert len(got) == len(expected) == len(source)
    for ours, theirs in zip(got, expected, strict=True):
        assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert staged.transfer.streams.kept == list(range(len(source)))  # every batch was handed to the training stream
