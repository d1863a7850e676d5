import pytest
import torch

from lightning_mspipe.data.datamodule import TemporalDataModule, chronological_split
from lightning_mspipe.data.loader import TemporalBatchLoader
from lightning_mspipe.data.negatives import DestinationSampler, batch_generator, fixed_negatives
from lightning_mspipe.data.synthetic import synthetic_events

from tests.conftest import small_datamodule


@pytest.fixture(scope="module")
def dm():
    return small_datamodule()


def test_sizes_are_known_after_construction(dm):
    assert dm.num_nodes == 300 and dm.edge_dim == 4
    sizes = dm.split_sizes()
    assert sizes["val"] > 0 and sizes["test"] > 0 and sizes["train"] < 0.7 * 3000 + 1


def test_split_is_chronological_and_holds_out_new_nodes(dm):
    split, t = dm.split, dm.events.t
    assert t[split.train].max() <= t[split.val].min() and t[split.val].max() <= t[split.test].min()
    train_nodes = torch.cat([dm.events.src[split.train], dm.events.dst[split.train]]).unique()
    assert not torch.isin(split.new_nodes, train_nodes).any()
    assert split.new_nodes.numel() > 0
    test_events = split.test
    touches_new = torch.isin(dm.events.src[test_events], split.new_nodes) | torch.isin(
        dm.events.dst[test_events], split.new_nodes
    )
    assert (split.test_new_node | ~touches_new).all()  # every held-out node's event is marked new


def test_split_is_seeded():
    events = synthetic_events(300, 3000, seed=1)
    a = chronological_split(events, 0.15, 0.15, 0.1, seed=3)
    b = chronological_split(events, 0.15, 0.15, 0.1, seed=3)
    c = chronological_split(events, 0.15, 0.15, 0.1, seed=4)
    assert torch.equal(a.new_nodes, b.new_nodes) and not torch.equal(a.new_nodes, c.new_nodes)


def test_train_batches_are_chronological_and_sized(dm):
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader)
    eids = torch.cat([b.eids for b in batches])
    assert torch.equal(eids, dm.split.train)
    for batch in batches:
        assert batch.neg_dst.shape == (batch.size, 1)
        assert batch.edge_feat.shape == (batch.size, 4)
        assert batch.nbr_edge_feat.shape == (batch.size * 3, 10, 4)
        nbrs = batch.neighbors
        assert (nbrs.times < batch.root_times().unsqueeze(1))[nbrs.mask].all()  # strictly earlier


def test_roots_see_earlier_events_of_their_own_batch_by_default(dm):
    seen_own_batch = 0
    for batch in dm.train_dataloader():
        nbrs = batch.neighbors
        root_t = batch.root_times().unsqueeze(1).expand_as(nbrs.times)
        assert (nbrs.times < root_t)[nbrs.mask].all()  # the time rule alone; same-instant events hidden
        seen_own_batch += int((nbrs.eids >= batch.eids[0])[nbrs.mask].sum())
    assert seen_own_batch > 0


def test_batch_visibility_hides_the_whole_batch():
    dm = small_datamodule(neighbor_visibility="batch")
    for batch in dm.train_dataloader():
        nbrs = batch.neighbors
        assert (nbrs.eids[nbrs.mask] < batch.eids[0]).all()


def test_training_negatives_repeat_per_epoch_position(dm):
    first, second = dm.train_dataloader(), dm.train_dataloader()
    a = [b.neg_dst for b in first]
    b = [b.neg_dst for b in second]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    again = [b.neg_dst for b in first]  # next epoch draws new negatives
    assert not all(torch.equal(x, y) for x, y in zip(a, again))


def test_loader_resumes_mid_epoch(dm):
    loader = dm.train_dataloader()
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    rest = [b.neg_dst for b in iterator]
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert all(torch.equal(x, y.neg_dst) for x, y in zip(rest, resumed))
    assert len(list(resumed)) == len(loader)  # the following epoch is whole


def test_eval_negatives_are_fixed_and_exclude_the_positive(dm):
    batch = next(iter(dm.test_dataloader()))
    assert batch.neg_dst.shape == (batch.size, 5)
    assert not (batch.neg_dst == batch.dst.unsqueeze(1)).any()
    again = next(iter(small_datamodule().test_dataloader()))
    assert torch.equal(batch.neg_dst, again.neg_dst)
    val = next(iter(dm.val_dataloader()))
    assert val.neg_dst.shape[1] == 1 and val.new_node is not None


def test_rank_slices_partition_each_global_batch(dm):
    loaders = [dm._loader(dm.split.train, dm.train_graph, negative_sampler=DestinationSampler(torch.arange(300)))
               for _ in range(3)]
    for rank, loader in enumerate(loaders):
        loader.rank, loader.world_size = rank, 3
    for batches in zip(*loaders):
        merged = torch.cat([b.eids for b in batches])
        assert torch.equal(merged, dm.split.train[batches[0].index * 200 : batches[0].index * 200 + merged.numel()])


def test_rank_slices_draw_the_negatives_and_sizes_of_one_process(dm):
    whole = dm.train_dataloader()
    slices = [dm.train_dataloader() for _ in range(2)]
    for rank, loader in enumerate(slices):
        loader.rank, loader.world_size = rank, 2
    for index in (0, len(whole) - 1):  # the last batch is partial
        expected = whole.sample(index)
        parts = [loader.sample(index) for loader in slices]
        assert torch.equal(torch.cat([p.neg_dst for p in parts]), expected.neg_dst)
        assert all(p.global_size == expected.global_size == expected.size for p in parts)


def test_a_rank_without_events_in_the_last_batch_is_refused():
    with pytest.raises(ValueError, match=r"last global batch of this split has 2 events .* fewer than the 3 ranks"):
        TemporalBatchLoader(synthetic_events(20, 102), torch.arange(102), None, 50, 5,
                            negative_sampler=DestinationSampler(torch.arange(20)), rank=0, world_size=3)


def test_fixed_negatives_are_seeded():
    dst = torch.arange(100) % 7
    a = fixed_negatives(dst, 4, torch.arange(7), seed=1)
    assert torch.equal(a, fixed_negatives(dst, 4, torch.arange(7), seed=1))
    assert not torch.equal(a, fixed_negatives(dst, 4, torch.arange(7), seed=2))
    assert not (a == dst.unsqueeze(1)).any()


def test_uniform_negatives_cover_the_candidates():
    sampler = DestinationSampler(torch.tensor([3, 5, 9]))
    draws = sampler.sample(torch.zeros(3000, dtype=torch.long), 1, batch_generator(0, 1))
    counts = torch.bincount(draws.squeeze(1), minlength=10)[[3, 5, 9]]
    assert counts.sum() == 3000 and (counts > 850).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(batch_size=0), "batch_size must be ≥ 1"),
        (dict(val_ratio=0.6, test_ratio=0.5), "val_ratio"),
        (dict(sampling="latest"), "unknown sampling 'latest'"),
        (dict(train_negatives="random"), "unknown train_negatives"),
        (dict(neighbor_visibility="none"), "unknown neighbor_visibility 'none'"),
        (dict(eval_negatives="src"), "unknown eval_negatives 'src'"),
        (dict(batch_size=5000), r"batch_size 5000 is larger than the train split of synthetic \(\d+ events\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_datamodule(**kwargs)


def test_events_and_path_together_are_rejected():
    with pytest.raises(ValueError, match="got `events` and `path`; pass only one of `events`, `path` and `name`."):
        TemporalDataModule(events=synthetic_events(100, 1000), path="x.csv")


def test_synthetic_stream_is_seeded_and_structured():
    a, b = synthetic_events(200, 2000, edge_dim=3, seed=5), synthetic_events(200, 2000, edge_dim=3, seed=5)
    assert torch.equal(a.src, b.src) and torch.equal(a.dst, b.dst) and torch.equal(a.edge_feat, b.edge_feat)
    assert not torch.equal(a.dst, synthetic_events(200, 2000, seed=6).dst)
    assert (a.src < 100).all() and (a.dst >= 100).all()
    # recurring partners: a source's events concentrate on few destinations
    pairs = torch.stack([a.src, a.dst], 1).unique(dim=0).shape[0]
    assert pairs < 0.6 * a.num_events


def test_destination_negatives_come_from_destinations():
    dm = small_datamodule(eval_negatives="dst")
    destinations = dm.events.dst.unique()
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert torch.isin(loader.negatives, destinations).all()
    assert not torch.isin(small_datamodule().test_dataloader().negatives, destinations).all()
