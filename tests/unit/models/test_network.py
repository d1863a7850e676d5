"""The networks are plain nn.Modules: they train in a plain PyTorch loop, without Lightning."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_mspipe.models import APANNetwork, JODIENetwork, MemoryNetwork, TGN, TGNNetwork
from lightning_mspipe.pipeline.stages import fetch_memory

from tests.conftest import SMALL_MODEL, small_datamodule


@pytest.mark.parametrize("network_cls", [TGNNetwork, JODIENetwork, APANNetwork])
def test_a_network_trains_in_a_plain_pytorch_loop(network_cls):
    torch.manual_seed(0)
    dm = small_datamodule()
    net = network_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    assert not isinstance(net, L.LightningModule)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = dm.train_dataloader()
    epoch_losses = []
    for _ in range(4):
        net.memory.reset()
        losses = []
        for batch in loader:
            out = net(fetch_memory(net.memory, batch))
            loss = F.binary_cross_entropy_with_logits(out.pos, torch.ones_like(out.pos))
            loss = loss + F.binary_cross_entropy_with_logits(out.neg, torch.zeros_like(out.neg))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            net.memory.scatter(net.memory_write(batch, out.memory.detach()))
            losses.append(float(loss))
        epoch_losses.append(sum(losses) / len(losses))
    assert epoch_losses[-1] < 0.95 * epoch_losses[0]


def test_the_lightning_module_wraps_its_network():
    model = TGN(num_nodes=50, **SMALL_MODEL)
    assert isinstance(model.net, TGNNetwork) and model.memory is model.net.memory
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"net"}


def test_a_batch_without_memory_is_refused_by_the_network():
    dm = small_datamodule()
    loader = dm.train_dataloader()
    loader.start_epoch()
    net: MemoryNetwork = TGNNetwork(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    with pytest.raises(ValueError, match="has no memory snapshot; fetch it first"):
        net(loader.fetch_features(loader.sample(0)))
