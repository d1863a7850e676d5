import torch

from lightning_mspipe import APAN, TGN
from lightning_mspipe.memory.exchange import merge_writes
from lightning_mspipe.memory.store import MemoryWrite
from lightning_mspipe.pipeline.stages import fetch_memory
from tests.conftest import SMALL_MODEL, small_datamodule


def writes_of(model, loader, batch_index):
    batch = fetch_memory(model.memory, loader.sample(batch_index))
    batch = loader.fetch_features(batch)
    with torch.no_grad():
        out = model.net(batch)
    return model.memory_write(batch, out.memory)


def test_merged_slice_writes_equal_the_write_of_one_process():
    dm = small_datamodule(batch_size=200)
    for model_cls, deliver_to in ((TGN, "self"), (APAN, "neighbors")):  # an own mail must win over a delivered one
        torch.manual_seed(0)
        model = model_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, dropout=0.0, deliver_to=deliver_to,
                          **SMALL_MODEL).eval()
        whole = dm.train_dataloader()
        slices = [dm.train_dataloader() for _ in range(3)]
        for rank, loader in enumerate(slices):
            loader.rank, loader.world_size = rank, 3
        for index in range(3):  # memory filled by the earlier batches, so rows and mails differ by event
            expected = writes_of(model, whole, index)
            merged = merge_writes([writes_of(model, loader, index) for loader in slices])
            for name, value in vars(expected).items():
                torch.testing.assert_close(getattr(merged, name), value, msg=lambda m, n=name, c=model_cls: f"{c.__name__}: {n}: {m}")
            model.memory.scatter(expected)
        assert bool(expected.own_mail.all()) == (deliver_to == "self")  # delivered mails are in the write


def one_node_write(value: float, own: bool) -> MemoryWrite:
    """A write of node 7 whose every field holds ``value``; its mail is 7's own or delivered to it as a neighbour."""
    nodes = torch.tensor([7])
    times = torch.tensor([value], dtype=torch.float64)
    return MemoryWrite(nodes=nodes, memory=torch.full((1, 2), value), last_update=times, mail_nodes=nodes,
                       mail=torch.full((1, 3), value), mail_ts=times, own_mail=torch.tensor([own]))


def test_the_last_rank_wins_for_a_node_written_by_several():
    merged = merge_writes([one_node_write(1.0, own=True), one_node_write(2.0, own=True)])
    assert merged.nodes.tolist() == [7] and merged.memory.tolist() == [[2.0, 2.0]] and merged.mail_ts.tolist() == [2.0]


def test_an_own_mail_wins_over_a_later_ranks_delivered_mail():
    merged = merge_writes([one_node_write(1.0, own=True), one_node_write(2.0, own=False)])
    assert merged.memory.tolist() == [[2.0, 2.0]]  # memory rows: last rank
    assert merged.mail.tolist() == [[1.0, 1.0, 1.0]] and merged.own_mail.tolist() == [True]
