import pytest
import torch

from lightning_mspipe.memory import MemoryStore, MemoryWrite
from lightning_mspipe.similarity import CosineNeighbors, cosine_top_k, similarity_blocks


def brute_force_top_k(memory, k):
    unit = torch.nn.functional.normalize(memory, dim=1)
    sims = unit @ unit.t()
    sims.fill_diagonal_(float("-inf"))
    return sims.topk(k, dim=1).indices


@pytest.mark.parametrize(("count", "k", "chunk"), [(37, 4, 8), (37, 4, 37), (9, 12, 2), (5, 1, 1)])
def test_chunked_top_k_equals_the_brute_force_top_k(count, k, chunk):
    memory = torch.randn(count, 5, generator=torch.Generator().manual_seed(count + chunk))
    assert torch.equal(cosine_top_k(memory, k, chunk), brute_force_top_k(memory, min(k, count - 1)))


def test_similarity_blocks_never_exceed_the_chunk_and_cover_the_matrix():
    unit = torch.nn.functional.normalize(torch.randn(23, 4), dim=1)
    covered = torch.zeros(23, 23, dtype=torch.int64)
    for row, col, block in similarity_blocks(unit, chunk=5):
        assert block.shape[0] <= 5 and block.shape[1] <= 5
        covered[row : row + block.shape[0], col : col + block.shape[1]] += 1
    assert bool((covered == 1).all())  # every pair exactly once


def test_the_table_holds_active_nodes_only_and_reads_candidates_from_the_store():
    memory = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [5.0, 5.0]])
    table = CosineNeighbors(top_k=1, chunk=2)
    table.rebuild(memory, torch.tensor([True, True, True, True, False]))
    assert table.table[:, 0].tolist() == [1, 0, 3, 2, -1]  # node 4 is inactive: no entry, nobody's neighbour
    store = MemoryStore(5, 2, 1)
    store.scatter(MemoryWrite(torch.tensor([1]), torch.tensor([[3.0, 3.0]]), torch.tensor([2.0], dtype=torch.float64),
                              torch.tensor([1]), torch.zeros(1, 1), torch.tensor([2.0], dtype=torch.float64)))
    candidates = table.candidates(torch.tensor([0, 4]), store)
    assert candidates.memory.shape == (2, 1, 2) and candidates.memory[0, 0].tolist() == [3.0, 3.0]
    assert candidates.time[0, 0] == 2.0 and candidates.mask.tolist() == [[True], [False]]


def test_the_table_round_trips_through_its_state():
    table = CosineNeighbors(top_k=2)
    table.rebuild(torch.randn(6, 3), torch.ones(6, dtype=torch.bool))
    restored = CosineNeighbors(top_k=2)
    restored.load_state_dict(table.state_dict())
    assert torch.equal(restored.table, table.table)


def test_candidates_need_a_table():
    with pytest.raises(RuntimeError, match="call rebuild"):
        CosineNeighbors(top_k=2).candidates(torch.tensor([0]), MemoryStore(2, 2, 1))
