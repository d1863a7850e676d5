"""WriteBack on a CPU with stand-in streams: a write comes back equal, through a slot held during the scatter."""

import pytest
import torch

from lightning_mspipe.data.batch import tensors_of
from lightning_mspipe.pipeline.ring import SlotRing
from lightning_mspipe.pipeline.staging import Arena
from lightning_mspipe.pipeline.writeback import WriteBack, make_write_back
from tests.unit.pipeline.conftest import make_store, node_write
from tests.unit.pipeline.test_transfer import FakeStreams


def write_back(slots=2):
    return WriteBack(SlotRing([Arena(pin=False) for _ in range(slots)], slots - 2, 30.0), FakeStreams())


def test_a_write_comes_back_equal_and_its_copy_is_waited_for():
    back, write = write_back(), node_write(node=5, value=3.0)
    write.own_mail = torch.tensor([True])
    with back.to_host(write, lambda: None) as host:
        assert all(torch.equal(a, b) for a, b in zip(tensors_of(host), tensors_of(write), strict=True))
        store = make_store()
        store.scatter(host)
    assert store.memory[5].eq(3.0).all() and len(back.streams.recorded) == 1


def test_the_slot_is_held_until_the_scatter_is_done():
    back = write_back(slots=2)
    with back.to_host(node_write(), lambda: None):
        with back.to_host(node_write(), lambda: None):
            with pytest.raises(RuntimeError, match=r"all 2 slots are held"):
                with back.to_host(node_write(), lambda: None):
                    pass
    with back.to_host(node_write(), lambda: None):  # both given back
        pass


def test_nothing_is_staged_on_a_cpu():
    assert make_write_back(torch.device("cpu"), bound=2, timeout=1.0) is None
