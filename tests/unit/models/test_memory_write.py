import pytest
import torch

from lightning_mspipe.models import APAN, JODIE, TGN
from lightning_mspipe.pipeline.stages import fetch_memory

from tests.conftest import SMALL_MODEL, small_datamodule


@pytest.fixture(scope="module")
def dm():
    return small_datamodule()


def _batch(dm):
    loader = dm.train_dataloader()
    loader.start_epoch()
    return loader.fetch_features(loader.sample(0))


@pytest.mark.parametrize("model_cls", [TGN, JODIE, APAN])
def test_only_true_endpoints_get_memory_and_negatives_are_never_written(dm, model_cls):
    model = model_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    batch = fetch_memory(model.memory, _batch(dm))
    out = model(batch)
    write = model.memory_write(batch, out.memory.detach())
    endpoints = torch.cat([batch.src, batch.dst]).unique()
    assert torch.equal(write.nodes, endpoints)
    only_negative = batch.neg_dst.unique()[~torch.isin(batch.neg_dst.unique(), endpoints)]
    if model_cls is APAN:  # APAN also mails sampled neighbours, but never a negative as such
        neighbours = batch.neighbors.nodes[: 2 * batch.size][batch.neighbors.mask[: 2 * batch.size]]
        only_negative = only_negative[~torch.isin(only_negative, neighbours)]
    assert not torch.isin(only_negative, write.mail_nodes).any()
    before = model.memory.memory[only_negative].clone()
    model.memory.scatter(write)
    assert torch.equal(model.memory.memory[only_negative], before)
    assert model.memory.current_version == 1


def test_a_node_in_several_events_keeps_its_last_event(dm):
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    batch = _batch(dm)
    node = int(batch.src[0])
    batch.src[5] = node  # node is the source of events 0 and 5 (and maybe more)
    batch.dst[7] = node  # … and the destination of event 7, its last occurrence here
    batch.src[8:] = torch.where(batch.src[8:] == node, (node + 1) % 150, batch.src[8:])
    batch.dst[8:] = torch.where(batch.dst[8:] == node, 150 + (node % 150), batch.dst[8:])
    batch = fetch_memory(model.memory, batch)
    out = model(batch)
    write = model.memory_write(batch, out.memory.detach())
    row = int((write.mail_nodes == node).nonzero())
    assert float(write.mail_ts[row]) == float(batch.t[7])
    assert torch.equal(write.mail[row, -dm.edge_dim :], batch.edge_feat[7])


@pytest.mark.parametrize(
    ("model_cls", "deliver_to", "to_neighbours"),
    [(APAN, None, False), (APAN, "neighbors", True), (TGN, None, False), (TGN, "neighbors", True)],
)
def test_mails_reach_neighbours_only_when_delivered_to_them(dm, model_cls, deliver_to, to_neighbours):
    model = model_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, deliver_to=deliver_to, **SMALL_MODEL)
    loader = dm.train_dataloader()
    loader.start_epoch()
    batch = fetch_memory(model.memory, loader.fetch_features(loader.sample(3)))
    write = model.memory_write(batch, model(batch).memory.detach())
    nbrs = batch.neighbors.nodes[: batch.size][batch.neighbors.mask[: batch.size]].unique()
    assert nbrs.numel() > 0
    assert bool(torch.isin(nbrs, write.mail_nodes).all()) == to_neighbours
    assert torch.equal(write.nodes, torch.cat([batch.src, batch.dst]).unique())  # memory: endpoints only
    if not to_neighbours:
        assert torch.equal(write.mail_nodes, write.nodes)


def test_an_unknown_delivery_is_named():
    with pytest.raises(ValueError, match="unknown deliver_to 'everyone'"):
        TGN(num_nodes=10, deliver_to="everyone")
