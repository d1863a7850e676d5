import gc
import threading
import weakref

import pytest
import torch

from lightning_mspipe.memory import MemoryStore, MemoryWrite, last_occurrence


def _write(nodes, value, t=1.0, mail_nodes=None, dim=4, mail_dim=3):
    nodes = torch.as_tensor(nodes)
    mail_nodes = nodes if mail_nodes is None else torch.as_tensor(mail_nodes)
    return MemoryWrite(
        nodes=nodes,
        memory=torch.full((nodes.numel(), dim), float(value)),
        last_update=torch.full((nodes.numel(),), t, dtype=torch.float64),
        mail_nodes=mail_nodes,
        mail=torch.full((mail_nodes.numel(), mail_dim), float(value)),
        mail_ts=torch.full((mail_nodes.numel(),), t + 1, dtype=torch.float64),
    )


def test_last_occurrence_keeps_last_position():
    unique, position = last_occurrence(torch.tensor([5, 3, 5, 7, 3, 5]))
    assert unique.tolist() == [3, 5, 7]
    assert position.tolist() == [4, 5, 3]


def test_scatter_writes_rows_and_increments_version():
    store = MemoryStore(10, 4, 3)
    assert store.scatter(_write([1, 2], 7.0)) == 1
    snap = store.gather(torch.tensor([1, 2, 3]))
    assert snap.version == 1
    assert snap.memory[:2].eq(7).all() and snap.memory[2].eq(0).all()
    assert snap.mail_mask.tolist() == [[True], [True], [False]]
    assert snap.mail_ts[:2, 0].tolist() == [2.0, 2.0]


def test_gather_returns_copies():
    store = MemoryStore(5, 4, 3)
    snap = store.gather(torch.tensor([0, 1]))
    store.scatter(_write([0], 3.0))
    assert snap.memory.eq(0).all()


def test_mailbox_ring_overwrites_oldest():
    store = MemoryStore(4, 2, 1, mailbox_size=3)
    for step in range(5):
        store.scatter(_write([1], step, t=float(step), dim=2, mail_dim=1))
    snap = store.gather(torch.tensor([1]))
    assert sorted(snap.mail_ts[0].tolist()) == [3.0, 4.0, 5.0]  # mails of steps 2, 3, 4
    assert snap.mail_mask.all()
    assert float(snap.last_event_time()[0]) == 5.0


def test_reset_zeroes_written_rows_and_version():
    store = MemoryStore(6, 4, 3)
    store.scatter(_write([1, 4], 2.0))
    store.reset()
    assert store.current_version == 0
    for name in ("memory", "last_update", "mailbox", "mail_ts", "mail_count"):
        assert getattr(store, name).eq(0).all(), name


def test_nested_journal_rollback_restores_exactly():
    store = MemoryStore(6, 4, 3)
    store.scatter(_write([1, 2], 1.0))
    base = {k: v.clone() for k, v in store.state_dict().items()}
    store.begin_journal()
    store.scatter(_write([2, 3], 2.0))
    middle = {k: v.clone() for k, v in store.state_dict().items()}
    store.begin_journal()
    store.scatter(_write([3, 4], 3.0))
    store.scatter(_write([1], 4.0))
    store.rollback()
    for key, value in store.state_dict().items():
        assert torch.equal(value, middle[key]), key
    store.rollback()
    for key, value in store.state_dict().items():
        assert torch.equal(value, base[key]), key
    with pytest.raises(RuntimeError, match="no journal frame is open"):
        store.rollback()


def test_checkpoint_of_other_graph_size_is_rejected():
    small, large = MemoryStore(5, 4, 3), MemoryStore(8, 4, 3)
    with pytest.raises(ValueError, match=r"different number of nodes"):
        large.load_state_dict(small.state_dict())


def test_reset_after_loading_state_is_complete():
    source, target = MemoryStore(5, 4, 3), MemoryStore(5, 4, 3)
    source.scatter(_write([0, 4], 9.0))
    target.load_state_dict(source.state_dict())
    assert target.memory[4].eq(9).all()
    target.reset()
    assert target.memory.eq(0).all()


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="memory_dim must be ≥ 1"):
        MemoryStore(5, 0, 3)


def test_concurrent_reader_never_sees_a_half_done_write():
    store = MemoryStore(200, 4, 3)
    nodes = torch.arange(200)
    seen_torn = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            snap = store.gather(nodes)
            values = snap.memory[:, 0].unique()
            if values.numel() != 1 or int(values[0]) != snap.version:
                seen_torn.append((values.tolist(), snap.version))

    thread = threading.Thread(target=reader)
    thread.start()
    for step in range(1, 200):
        store.scatter(_write(nodes, float(step)))
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert seen_torn == []


class CountingCondition(threading.Condition):
    """A condition that counts its ``notify_all`` calls."""

    def __init__(self):
        super().__init__()
        self.notified = 0

    def notify_all(self):
        self.notified += 1
        super().notify_all()


def test_every_change_of_the_version_notifies_a_watching_condition():
    store = MemoryStore(10, 4, 3)
    condition = CountingCondition()
    store.watch_version(condition)
    store.scatter(_write([1], 1.0))
    store.begin_journal()
    store.scatter(_write([2], 2.0))
    store.rollback()
    store.reset()
    store.load_state_dict(store.state_dict())
    assert condition.notified == 5  # two writes, a rollback, a reset, a load


def test_the_store_does_not_keep_a_watcher_alive():
    store = MemoryStore(10, 4, 3)
    condition = CountingCondition()
    store.watch_version(condition)
    watcher = weakref.ref(condition)
    del condition
    gc.collect()
    assert watcher() is None  # a pipeline's gate does not leak with the model's store
    store.scatter(_write([1], 1.0))
