"""StreamOrder with stand-in streams: which events a read or a write waits for (no CUDA needed)."""

import torch

from lightning_mspipe.memory import MemoryStore, MemoryWrite
from lightning_mspipe.memory.ordering import StreamOrder


class FakeStreams:
    """Stand-in stream operations: a current stream name, events named after what recorded them, a log of waits."""

    def __init__(self):
        self.current = "default"
        self.recorded = 0
        self.waits = []  # (stream, event)

    def record(self):
        self.recorded += 1
        return f"{self.current}#{self.recorded}"

    def wait(self, event):
        self.waits.append((self.current, event))

    def stream_key(self):
        return self.current


def test_a_read_waits_for_the_last_write_on_another_stream():
    streams = FakeStreams()
    order = StreamOrder(lambda: streams)
    streams.current = "writer"
    order.before_write()
    write = order.after_write()
    streams.current = "fetcher"
    order.before_read()
    assert streams.waits == [("fetcher", write)]


def test_a_write_waits_for_every_read_since_the_last_write():
    streams = FakeStreams()
    order = StreamOrder(lambda: streams)
    for stream in ("fetcher", "training", "fetcher"):  # the fetcher's second read replaces its first
        streams.current = stream
        order.before_read()
        order.after_read()
    streams.current = "writer"
    order.before_write()
    assert sorted(streams.waits) == [("writer", "fetcher#3"), ("writer", "training#2")]
    first = order.after_write()
    streams.waits.clear()
    order.before_write()  # the next write: the reads are covered by the first write
    assert streams.waits == [("writer", first)]


def test_nothing_is_recorded_for_a_store_off_the_gpu():
    order = StreamOrder(lambda: None)
    order.before_read()
    order.after_read()
    order.before_write()
    assert order.after_write() is None and order.last_write is None


def test_the_store_orders_its_gathers_and_scatters(monkeypatch):
    streams = FakeStreams()
    store = MemoryStore(6, 2, 1)
    monkeypatch.setattr(store, "_stream_events", lambda: streams)  # as if the store were on a GPU
    streams.current = "fetcher"
    store.gather(torch.tensor([1, 2]))
    streams.current = "writer"
    store.scatter(_write(torch.tensor([1])))  # must not overtake the fetcher's gather
    assert streams.waits == [("writer", "fetcher#1")]
    streams.current = "fetcher"
    store.gather(torch.tensor([1]))  # must see the write
    assert streams.waits[-1] == ("fetcher", "writer#2")


def _write(nodes):
    ones = lambda *shape, dtype=torch.float32: torch.ones(*shape, dtype=dtype)  # noqa: E731
    return MemoryWrite(nodes, ones(len(nodes), 2), ones(len(nodes), dtype=torch.float64), nodes, ones(len(nodes), 1),
                       ones(len(nodes), dtype=torch.float64))


def test_a_reader_of_the_whole_store_comes_after_the_last_write_and_before_the_next(monkeypatch):
    streams = FakeStreams()
    store = MemoryStore(6, 2, 1)
    monkeypatch.setattr(store, "_stream_events", lambda: streams)
    streams.current = "writer"
    store.scatter(_write(torch.tensor([2])))
    streams.current = "training"
    with store.reading():
        assert streams.waits == [("training", "writer#1")]
    streams.current = "writer"
    store.scatter(_write(torch.tensor([3])))
    assert ("writer", "training#2") in streams.waits
