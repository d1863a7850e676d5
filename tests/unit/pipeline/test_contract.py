from torch.utils.data import DataLoader

from lightning_mspipe.pipeline.contract import BatchSource, missing_members


def test_the_temporal_batch_loader_is_a_batch_source(source):
    assert isinstance(source, BatchSource) and missing_members(source) == []


def test_a_plain_dataloader_is_not_and_the_missing_methods_are_named():
    loader = DataLoader(list(range(4)))
    assert not isinstance(loader, BatchSource)
    assert missing_members(loader) == ["sample", "fetch_features", "set_epoch", "start_epoch", "advance", "state_dict",
                                       "load_state_dict"]


def test_missing_members_checks_every_method_of_the_protocol():
    declared = {name for name, value in vars(BatchSource).items() if callable(value) and (name == "__len__" or not name.startswith("_"))}
    assert set(missing_members(object())) == declared
