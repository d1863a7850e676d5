import lightning as L
import pytest
import torch

from lightning_mspipe import TGN, MSPipeStrategy

from tests.conftest import SMALL_MODEL, small_datamodule


def test_the_root_device_is_the_one_the_trainer_assigns():
    strategy = MSPipeStrategy()
    strategy.parallel_devices = [torch.device("cuda", 1)]  # what Trainer(accelerator="gpu", devices=[1]) assigns
    assert strategy.root_device == torch.device("cuda", 1)


def test_an_explicit_device_wins_over_the_assigned_one():
    strategy = MSPipeStrategy(device="cpu")
    strategy.parallel_devices = [torch.device("cuda", 1)]
    assert strategy.root_device == torch.device("cpu")


def test_a_trainer_on_one_cpu_assigns_the_cpu():
    trainer = L.Trainer(strategy=MSPipeStrategy(), accelerator="cpu", devices=1, logger=False)
    assert trainer.strategy.root_device == torch.device("cpu")


def test_more_than_one_device_is_refused_naming_the_ddp_strategy():
    with pytest.raises(ValueError, match=r"asked for 2 \(cpu, cpu\)\. For several devices or nodes use "
                                         r"MSPipeDDPStrategy \(strategy='mspipe_ddp'"):
        L.Trainer(strategy=MSPipeStrategy(), accelerator="cpu", devices=2, logger=False)


def test_mid_epoch_validation_is_refused_under_the_pipeline():
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    trainer = L.Trainer(
        strategy=MSPipeStrategy(max_staleness=1), max_epochs=1, val_check_interval=0.5, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
    )
    with pytest.raises(ValueError, match=r"val_check_interval=0.5 runs validation in the middle of a training epoch"):
        trainer.fit(model, dm)
