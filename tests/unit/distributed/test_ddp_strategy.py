import math

import lightning as L
import pytest
import torch

from lightning_mspipe import TGN, MSPipeDDPStrategy
from lightning_mspipe.distributed.strategy import memory_buffer_names
from tests.conftest import SMALL_MODEL


def test_the_name_builds_the_ddp_strategy_on_the_devices_asked_for():
    trainer = L.Trainer(strategy="mspipe_ddp", accelerator="cpu", devices=2, logger=False)
    assert isinstance(trainer.strategy, MSPipeDDPStrategy) and trainer.world_size == 2
    assert trainer.strategy.max_staleness == 2 and not trainer.strategy.keep_inflight_snapshots


def test_per_step_buffer_sync_is_off_and_cannot_be_turned_on():
    assert not any(MSPipeDDPStrategy()._ddp_kwargs.get(flag, False)
                   for flag in ("broadcast_buffers", "forward_sync_buffers"))
    with pytest.raises(ValueError, match=r"broadcast_buffers=True would overwrite every rank's memory"):
        MSPipeDDPStrategy(broadcast_buffers=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr_scaling": "linear"}, ValueError, "unknown lr_scaling 'linear'"),
        ({"max_staleness": -1}, ValueError, "must be ≥ 0"),
        ({"max_staleness": "auto", "mode": "exact"}, ValueError, "MSPipeDDPStrategy: mode='exact' needs a fixed"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        MSPipeDDPStrategy(**kwargs)


def test_the_timeout_bounds_the_process_group_too():
    assert MSPipeDDPStrategy(timeout=7.5)._timeout.total_seconds() == 7.5


def test_the_memory_buffers_are_named_for_ddp_to_ignore():
    model = TGN(num_nodes=10, **SMALL_MODEL)
    names = memory_buffer_names(model)
    assert set(names) == {f"net.memory.{n}" for n in ("memory", "last_update", "mailbox", "mail_ts", "mail_count",
                                                      "version")}
    assert set(names) <= set(dict(model.named_buffers()))


def test_sqrt_lr_scaling_multiplies_every_learning_rate(monkeypatch):
    strategy = MSPipeDDPStrategy(lr_scaling="sqrt")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    monkeypatch.setattr(type(strategy), "world_size", property(lambda self: 4))
    monkeypatch.setattr(L.pytorch.strategies.DDPStrategy, "setup_optimizers", lambda self, trainer: None)
    strategy.optimizers = [optimizer]
    strategy.lr_scheduler_configs = [L.pytorch.utilities.types.LRSchedulerConfig(scheduler)]
    strategy.setup_optimizers(trainer=None)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * math.sqrt(4))
    assert scheduler.base_lrs == [pytest.approx(2e-3)]
