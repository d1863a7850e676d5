import pytest
import torch

from lightning_mspipe.data.batch import NeighborBlock, TemporalBatch
from lightning_mspipe.memory import MemorySnapshot, MemoryStore, MemoryWrite
from lightning_mspipe.mitigation import CosineNeighbors, blend_stale_memory, neighbor_candidates


def _batch():
    """4 roots (2 events: src 0, 1; dst 2, 3; no negatives used here) with 2 neighbour slots each.

    Snapshot rows: node i is row i. Memory times: node 0 is very stale (t=1), node 1 fresh (t=9),
    nodes 2, 3 medium (t=5); neighbours: 4 (t=8, newer), 5 (t=0.5, older), 6 (t=7, newer).
    """
    nodes = torch.arange(7)
    memory = torch.arange(7, dtype=torch.float32).unsqueeze(1).repeat(1, 2)
    last_update = torch.tensor([1.0, 9.0, 5.0, 5.0, 8.0, 0.5, 7.0], dtype=torch.float64)
    snapshot = MemorySnapshot(nodes, memory, last_update, torch.zeros(7, 1, 1), torch.zeros(7, 1, dtype=torch.float64),
                              torch.zeros(7, 1, dtype=torch.bool), version=0)
    nbr_nodes = torch.tensor([[4, 5], [4, 6], [5, 5], [6, 4], [0, 0], [0, 0]])
    mask = torch.tensor([[True, True], [True, True], [True, False], [True, True], [False, False], [False, False]])
    batch = TemporalBatch(index=3, eids=torch.arange(2), src=torch.tensor([0, 1]), dst=torch.tensor([2, 3]),
                          neg_dst=torch.tensor([[5], [6]]), t=torch.tensor([10.0, 10.0], dtype=torch.float64),
                          neighbors=NeighborBlock(nbr_nodes, torch.zeros_like(nbr_nodes), torch.zeros(6, 2), mask))
    batch.memory = snapshot
    batch.memory_index = torch.cat([batch.roots(), nbr_nodes.reshape(-1)])
    return batch


def test_only_stale_roots_change_and_only_toward_newer_memory():
    batch = _batch()
    before = batch.memory.memory.clone()
    blended = blend_stale_memory(batch, 0.5, 0.75, *neighbor_candidates(batch, top_k=2))
    # Δt per root: 9, 1, 5, 5, 9 (neg 5), 9 (neg 6)... the 0.75 quantile keeps the stalest roots
    assert blended.tolist() == [True, False, False, False, False, False]
    after = batch.memory.memory
    # node 0 blends only with neighbour 4 (newer); neighbour 5 is older and ignored
    assert after[0].tolist() == [0.5 * 0 + 0.5 * 4] * 2
    unchanged = torch.ones(7, dtype=torch.bool)
    unchanged[0] = False
    assert torch.equal(after[unchanged], before[unchanged])


def test_lam_one_changes_nothing():
    batch = _batch()
    before = batch.memory.memory.clone()
    blend_stale_memory(batch, 1.0, 0.5, *neighbor_candidates(batch, top_k=2))
    assert torch.equal(batch.memory.memory, before)


def test_cosine_table_finds_the_most_similar_active_nodes_in_chunks():
    memory = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [5.0, 5.0]])
    active = torch.tensor([True, True, True, True, False])
    table = CosineNeighbors(top_k=1, chunk=2)
    table.rebuild(memory, active)
    assert table.table[:4, 0].tolist() == [1, 0, 3, 2]
    assert table.table[4, 0] == -1  # inactive nodes have no entry
    store = MemoryStore(5, 2, 1)
    store.scatter(MemoryWrite(torch.tensor([1]), torch.tensor([[3.0, 3.0]]), torch.tensor([2.0], dtype=torch.float64),
                              torch.tensor([1]), torch.zeros(1, 1), torch.tensor([2.0], dtype=torch.float64)))
    mem, time, mask = table.candidates(torch.tensor([0, 4]), store)
    assert mem.shape == (2, 1, 2) and mem[0, 0].tolist() == [3.0, 3.0] and mask.tolist() == [[True], [False]]


def test_cosine_candidates_need_a_table():
    with pytest.raises(RuntimeError, match="call rebuild"):
        CosineNeighbors(top_k=2).candidates(torch.tensor([0]), MemoryStore(2, 2, 1))
