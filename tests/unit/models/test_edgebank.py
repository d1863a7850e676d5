import lightning as L
import pytest
import torch

from lightning_mspipe.models import EdgeBank
from lightning_mspipe.models.edgebank import EdgeMemory

from tests.conftest import small_datamodule


def test_edge_memory_keeps_the_latest_time_of_each_pair():
    bank = EdgeMemory(num_nodes=10)
    bank.insert(torch.tensor([1, 2, 1]), torch.tensor([5, 6, 5]), torch.tensor([1.0, 2.0, 3.0]))
    bank.insert(torch.tensor([1]), torch.tensor([5]), torch.tensor([0.5]))  # an older sighting changes nothing
    seen = bank.last_seen_at(torch.tensor([1, 2, 5, 3]), torch.tensor([5, 6, 1, 3]))
    assert seen.tolist() == [3.0, 2.0, float("-inf"), float("-inf")]  # pairs are directed


def test_scores_are_one_for_seen_pairs_and_respect_the_time_window():
    unlimited = EdgeBank(num_nodes=10)
    window = EdgeBank(num_nodes=10, mode="time_window", time_window=5.0)
    for model in (unlimited, window):
        model.bank.insert(torch.tensor([1, 2]), torch.tensor([5, 6]), torch.tensor([1.0, 8.0]))
    src, dst, t = torch.tensor([1, 2, 3]), torch.tensor([[5, 4], [6, 6], [7, 5]]), torch.tensor([10.0, 10.0, 10.0])
    assert unlimited.score(src, dst, t).tolist() == [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert window.score(src, dst, t).tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]  # (1, 5) is 9 ago


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(mode="recent"), "unknown mode 'recent'"), (dict(mode="time_window"), "needs a time_window > 0")],
)
def test_bad_modes_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EdgeBank(num_nodes=10, **kwargs)


def test_edgebank_runs_through_the_data_module_and_tests_reproducibly():
    dm = small_datamodule()
    model = EdgeBank(num_nodes=dm.num_nodes)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, dm)  # the sanity check runs first and must leave the bank empty
    train_pairs = torch.stack([dm.events.src[dm.split.train], dm.events.dst[dm.split.train]], 1).unique(dim=0)
    val_pairs = torch.stack([dm.events.src[dm.split.val], dm.events.dst[dm.split.val]], 1).unique(dim=0)
    assert model.bank.keys.numel() == torch.cat([train_pairs, val_pairs]).unique(dim=0).shape[0]
    first = trainer.test(model, dm, verbose=False)[0]
    second = trainer.test(model, dm, verbose=False)[0]  # test events must not leak into the next test
    assert first == second
    assert 0.55 < first["test/ap"] < 1.0
