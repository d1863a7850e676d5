"""Staging tensors in one byte buffer: the layout, and a round trip through a copy of it."""

from itertools import pairwise

import pytest
import torch

from lightning_mspipe.data.batch import tensors_of, with_tensors
from lightning_mspipe.pipeline.staging import ALIGN, Arena, pack, plan, views
from tests.unit.pipeline.conftest import stub_batch


def sample_tensors():
    return [
        torch.arange(5, dtype=torch.int64),
        torch.rand(3, 4).t(),  # not contiguous
        torch.tensor([True, False, True]),
        torch.empty(0, 7, dtype=torch.float64),  # empty
        torch.tensor(2.5, dtype=torch.float64),  # 0-dim
        torch.rand(2, 3, 2, dtype=torch.float16),
    ]


def test_a_layout_aligns_every_tensor_and_does_not_overlap():
    tensors = sample_tensors()
    slices, end = plan(tensors, start=10)
    assert all(piece.offset % ALIGN == 0 for piece in slices) and slices[0].offset == 64
    for earlier, later in pairwise(slices):
        assert earlier.offset + earlier.nbytes <= later.offset
    assert end >= slices[-1].offset + slices[-1].nbytes and end % ALIGN == 0


def test_packed_tensors_come_back_equal_from_a_copy_of_the_buffer():
    tensors = sample_tensors()
    slices, end = plan(tensors)
    buffer = Arena(pin=False).reserve(end)
    pack(tensors, slices, buffer)
    copy = buffer[:end].clone()  # the device side of an asynchronous copy
    for original, back in zip(tensors, views(copy, slices), strict=True):
        assert back.dtype == original.dtype and back.shape == original.shape and torch.equal(back, original)


def test_views_of_a_copy_that_starts_later_in_the_layout():
    tensors = sample_tensors()
    _, middle = plan(tensors[:2])
    rest, end = plan(tensors[2:], start=middle)
    buffer = Arena(pin=False).reserve(end)
    pack(tensors[2:], rest, buffer)
    tail = buffer[middle:end].clone()
    assert all(torch.equal(a, b) for a, b in zip(views(tail, rest, base=middle), tensors[2:], strict=True))


def test_an_arena_grows_and_never_shrinks():
    arena = Arena(pin=False, capacity=16)
    assert arena.reserve(8).numel() == 16
    assert arena.reserve(100).numel() >= 100
    size = arena.buffer.numel()
    assert arena.reserve(10).numel() == size


def test_a_batchs_tensors_are_replaced_in_order():
    batch = stub_batch(3)
    batch.edge_feat = torch.rand(0, 4)
    replaced = with_tensors(batch, [t + 1 if t.is_floating_point() else t for t in tensors_of(batch)])
    assert replaced.index == 3 and replaced is not batch
    assert [t.dtype for t in tensors_of(replaced)] == [t.dtype for t in tensors_of(batch)]
    with pytest.raises(ValueError, match=r"with_tensors: 1 tensors for a value holding 6"):
        with_tensors(batch, [torch.zeros(1)])
