"""Every model's embedding of a node depends on the time it is queried at (TGN, JODIE and APAN papers)."""

import dataclasses

import pytest
import torch

from lightning_mspipe.models import APAN, JODIE, TGN
from lightning_mspipe.pipeline.stages import fetch_memory

from tests.conftest import SMALL_MODEL, small_datamodule


@pytest.mark.parametrize("model_cls", [TGN, JODIE, APAN])
def test_a_node_queried_later_gets_another_embedding(model_cls):
    torch.manual_seed(0)
    dm = small_datamodule()
    model = model_cls(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL).eval()
    loader = dm.train_dataloader()
    loader.start_epoch()
    with torch.no_grad():
        for index in range(3):  # give the nodes memory, mails and a history
            batch = fetch_memory(model.memory, loader.fetch_features(loader.sample(index)))
            model.memory.scatter(model.memory_write(batch, model(batch).memory))
        batch = fetch_memory(model.memory, loader.fetch_features(loader.sample(3)))
        later = dataclasses.replace(batch, t=batch.t + 3600.0)  # the same roots and neighbours, an hour later
        now_emb = model.net.embed(batch, model.net.update_memory(batch))
        later_emb = model.net.embed(later, model.net.update_memory(later))
    rows = batch.memory_index[: batch.size]  # the sources' snapshot rows
    has_history = batch.memory.mail_mask.any(dim=1)[rows]
    changed = (now_emb[: batch.size] - later_emb[: batch.size]).abs().amax(dim=1) > 1e-6
    assert has_history.sum() >= 10
    assert changed[has_history].all()
