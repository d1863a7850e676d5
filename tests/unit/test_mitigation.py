import pytest
import torch

from lightning_mspipe import StalenessMitigation
from lightning_mspipe.data.batch import NeighborBlock, TemporalBatch
from lightning_mspipe.memory import MemorySnapshot, MemoryStore, MemoryWrite
from lightning_mspipe.mitigation import blend_stale_occurrences, neighbor_candidates, refresh_roots, stale_roots

NODES = 7


def _write(store, nodes, values, times):
    """Commit memory ``values`` (one ``[2]`` row per node) with last update ``times``."""
    nodes = torch.tensor(nodes)
    store.scatter(MemoryWrite(nodes, torch.tensor(values), torch.tensor(times, dtype=torch.float64),
                              nodes, torch.zeros(len(nodes), 1), torch.tensor(times, dtype=torch.float64)))


def _batch():
    """Events (0 → 2, t=2) and (0 → 3, t=10), negatives 5 and 6: roots 0, 0, 2, 3, 5, 6.

    Snapshot row i is node i with memory i. Memory times: node 0 at 1 (its occurrence at t=10 is
    the stale one, Δt = 9; at t=2, Δt = 1), 2 at 1.5, 3 at 9.5, 5 at 1.9, 6 at 9.9, 4 at 0.5.
    Node 0's second occurrence has neighbours 4 and 5; node 2 has neighbour 0.
    """
    last_update = torch.tensor([1.0, 0.0, 1.5, 9.5, 0.5, 1.9, 9.9], dtype=torch.float64)
    snapshot = MemorySnapshot(torch.arange(NODES), torch.arange(NODES, dtype=torch.float32).unsqueeze(1).repeat(1, 2),
                              last_update, torch.arange(NODES, dtype=torch.float32).view(NODES, 1, 1),
                              torch.zeros(NODES, 1, dtype=torch.float64), torch.ones(NODES, 1, dtype=torch.bool),
                              version=0)
    nbr_nodes = torch.tensor([[4, 5], [4, 5], [0, 0], [6, 4], [0, 0], [0, 0]])
    mask = torch.tensor([[True, True], [True, True], [True, False], [True, True], [False, False], [False, False]])
    batch = TemporalBatch(index=3, eids=torch.arange(2), src=torch.tensor([0, 0]), dst=torch.tensor([2, 3]),
                          neg_dst=torch.tensor([[5], [6]]), t=torch.tensor([2.0, 10.0], dtype=torch.float64),
                          neighbors=NeighborBlock(nbr_nodes, torch.zeros_like(nbr_nodes), torch.zeros(6, 2), mask))
    batch.memory = snapshot
    batch.memory_index = torch.cat([batch.roots(), nbr_nodes.reshape(-1)])
    return batch


def _live_store():
    """Node 4 was written since the snapshot (memory 40 at t=8); node 5's live memory is older than node 0's."""
    store = MemoryStore(NODES, 2, 1)
    _write(store, [4, 5], [[40.0, 40.0], [50.0, 50.0]], [8.0, 0.5])
    return store


def test_stale_roots_are_occurrences_not_nodes():
    assert stale_roots(_batch(), quantile=0.9).tolist() == [1]  # node 0 at t=10, not node 0 at t=2


def test_candidates_are_read_from_the_live_store_not_the_snapshot():
    batch, store = _batch(), _live_store()
    candidates = neighbor_candidates(batch, torch.tensor([1]), top_k=2, store=store)
    assert candidates.memory[0, :, 0].tolist() == [40.0, 50.0]  # the snapshot holds 4 and 5
    assert candidates.time.tolist() == [[8.0, 0.5]] and candidates.mask.tolist() == [[True, True]]


def test_the_blended_rows_are_exactly_the_stale_occurrences():
    batch, store = _batch(), _live_store()
    before_memory, before_index = batch.memory.memory.clone(), batch.memory_index.clone()
    positions = stale_roots(batch, quantile=0.9)
    blended = blend_stale_occurrences(batch, positions, 0.5, neighbor_candidates(batch, positions, 2, store))
    assert blended.tolist() == [False, True, False, False, False, False]
    index, memory = batch.memory_index, batch.memory.memory
    # only occurrence 1 moved, to a new row of its own; node 0's other occurrence and its neighbour slot did not
    changed = (index != before_index).nonzero().squeeze(1).tolist()
    assert changed == [1] and index[1] == NODES and index[0] == 0 and index[6 + 2 * 2] == 0
    assert torch.equal(memory[:NODES], before_memory)  # no existing row was written
    # 0.5 · 0 + 0.5 · 40: neighbour 4 is newer in the live store, neighbour 5 is not
    assert memory[NODES].tolist() == [20.0, 20.0]
    row = batch.memory
    assert (row.nodes[NODES], row.last_update[NODES], row.mailbox[NODES].item()) == (0, 1.0, 0.0)


def test_an_occurrence_with_no_newer_candidate_is_left_alone():
    batch = _batch()
    store = MemoryStore(NODES, 2, 1)  # nothing written since: every candidate is older than node 0's memory
    positions = stale_roots(batch, quantile=0.9)
    blended = blend_stale_occurrences(batch, positions, 0.5, neighbor_candidates(batch, positions, 2, store))
    assert not blended.any() and batch.memory.memory.shape[0] == NODES


def test_lam_one_keeps_the_stale_value():
    batch, store = _batch(), _live_store()
    positions = stale_roots(batch, quantile=0.9)
    blend_stale_occurrences(batch, positions, 1.0, neighbor_candidates(batch, positions, 2, store))
    assert batch.memory.memory[batch.memory_index[1]].tolist() == [0.0, 0.0]


def test_refresh_replaces_each_root_row_by_its_live_row_and_keeps_the_neighbour_rows():
    batch, store = _batch(), _live_store()
    _write(store, [2], [[20.0, 20.0]], [9.0])
    old = batch.memory
    changed = refresh_roots(batch, store)
    live = store.gather(torch.arange(NODES))
    roots, others = [0, 2, 3, 5, 6], [1, 4]  # node 4 is only a neighbour
    for name in ("memory", "last_update", "mailbox", "mail_ts", "mail_mask"):
        new = getattr(batch.memory, name)
        assert torch.equal(new[roots], getattr(live, name)[roots].to(new.dtype)), name
        assert torch.equal(new[others], getattr(old, name)[others]), name
    assert old.memory[2, 0] == 2.0  # the old snapshot is not written
    assert changed.dim() == 0 and int(changed) == len(roots)  # every root's live row differs from the snapshot's
    assert int(refresh_roots(batch, store)) == 0  # a second refresh finds nothing newer


def test_the_cosine_table_is_built_and_used_in_the_first_epoch():
    store = _live_store()
    _write(store, [0, 5], [[1.0, 0.0], [0.0, 50.0]], [0.7, 0.5])  # node 0 is most similar to 4 (cos 0.71; to 5: 0)
    mitigation = StalenessMitigation(lam=0.5, quantile=0.9, top_k=1, similarity="cosine", rebuild_every=1)
    batch = _batch()
    batch.memory.version = 1  # stale by 2
    mitigation.before_step(batch, live_memory=lambda: store)
    assert mitigation.cosine.table is not None and mitigation.cosine.table[0, 0] == 4
    assert mitigation.blended_roots == 1  # with its cosine neighbour's live memory (4 at t=8 is newer than 1)
    assert batch.memory.memory[batch.memory_index[1]].tolist() == [20.0, 20.0]


def test_the_mitigation_state_round_trips_the_cosine_table():
    store = _live_store()
    mitigation = StalenessMitigation(top_k=2, similarity="cosine")
    mitigation.cosine.rebuild(store.memory, store.mail_count > 0)
    mitigation.blended_roots, mitigation.seen_roots = 3, 10
    restored = StalenessMitigation(top_k=2, similarity="cosine")
    restored.load_state_dict(mitigation.state_dict())
    assert torch.equal(restored.cosine.table, mitigation.cosine.table) and restored.blended_share == 0.3


@pytest.mark.parametrize(("kwargs", "match"), [({"rebuild_every": 0}, "rebuild_every"), ({"lam": 2.0}, "lam"),
                                               ({"similarity": "jaccard"}, "unknown similarity")])
def test_bad_mitigation_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StalenessMitigation(**kwargs)


class SyncSpy(torch.Tensor):
    """A tensor that counts how often it is read on the host (``int``, ``item``, ``bool``)."""

    reads = 0

    def __int__(self):
        SyncSpy.reads += 1
        return int(self.as_subclass(torch.Tensor))

    def item(self):
        SyncSpy.reads += 1
        return self.as_subclass(torch.Tensor).item()


def test_the_blend_count_stays_a_tensor_until_it_is_read(monkeypatch):
    import lightning_mspipe.staleness_mitigation as module

    blend = module.blend_stale_occurrences
    monkeypatch.setattr(module, "blend_stale_occurrences", lambda *args: blend(*args).as_subclass(SyncSpy))
    SyncSpy.reads = 0
    store, mitigation = _live_store(), StalenessMitigation(lam=0.5, quantile=0.9, top_k=2)
    for _ in range(3):
        batch = _batch()  # stale by 3 (index 3, version 0)
        mitigation.before_step(batch, live_memory=lambda: store)
    assert SyncSpy.reads == 0  # no host sync per stale batch
    assert mitigation.blended_roots == 3 and SyncSpy.reads == 1
    assert mitigation.blended_roots == 3 and SyncSpy.reads == 1  # read once, then counted on the host


def test_a_fresh_batch_neither_blends_nor_reads_live_memory():
    batch, mitigation = _batch(), StalenessMitigation(quantile=0.5)
    batch.memory.version = batch.index  # staleness 0

    def no_read():
        raise AssertionError("live memory read for a fresh batch")

    mitigation.before_step(batch, live_memory=no_read)
    assert mitigation.seen_roots == 0 and batch.memory.memory.shape[0] == NODES


def test_a_cut_epoch_keeps_the_cosine_table_and_a_complete_one_rebuilds_it():
    store = _live_store()
    mitigation = StalenessMitigation(top_k=1, similarity="cosine")
    mitigation.end_epoch(store, complete=False)
    assert mitigation.cosine.table is None and not mitigation.built_at_epoch_end
    mitigation.end_epoch(store, complete=True)
    assert mitigation.cosine.table is not None and mitigation.built_at_epoch_end
