"""Pieces of the pipeline without a Trainer: a small store, a real batch source and a write that bumps the version."""

from __future__ import annotations

import pytest
import torch

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.data.loader import TemporalBatchLoader
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite

from tests.conftest import small_datamodule

MEMORY_DIM, MAIL_DIM = 4, 3


def make_store(num_nodes: int = 300) -> MemoryStore:
    return MemoryStore(num_nodes, MEMORY_DIM, MAIL_DIM)


def node_write(node: int = 0, value: float = 1.0) -> MemoryWrite:
    """A write of a single node's memory (filled with ``value``) and one mail."""
    one = torch.tensor([node])
    return MemoryWrite(nodes=one, memory=torch.full((1, MEMORY_DIM), value),
                       last_update=torch.zeros(1, dtype=torch.float64), mail_nodes=one, mail=torch.zeros(1, MAIL_DIM),
                       mail_ts=torch.zeros(1, dtype=torch.float64))


def commit_write(store: MemoryStore, node: int = 0) -> int:
    """Apply one write of a single node (the version advances by one); return the new version."""
    return store.scatter(node_write(node, float(store.current_version + 1)))


def stub_batch(index: int) -> TemporalBatch:
    empty = torch.empty(0, dtype=torch.int64)
    return TemporalBatch(index=index, eids=empty, src=empty, dst=empty, neg_dst=empty.view(0, 1),
                         t=torch.empty(0, dtype=torch.float64))


@pytest.fixture
def source() -> TemporalBatchLoader:
    dm = small_datamodule()
    dm.setup("fit")
    return dm.train_dataloader()
