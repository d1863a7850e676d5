"""The scripts in examples/ run (imported and called with tiny sizes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from lightning_mspipe import MSPipeStrategy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_tgn_mspipe_trains_through_the_pipeline_and_tests(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the Trainer writes lightning_logs/ here
    tiny = ["--nodes", "200", "--events", "2000", "--epochs", "1", "--dim", "16"]
    trainer = load_example("train_tgn_mspipe").main(tiny)
    assert isinstance(trainer.strategy, MSPipeStrategy) and trainer.strategy.max_staleness == 2
    assert trainer.strategy.pipeline.profile.batches == trainer.num_training_batches > 0
    assert trainer.strategy.pipeline.profile.max_staleness_seen() <= 2
    assert f"test/ap {trainer.callback_metrics['test/ap']:.4f}" in capsys.readouterr().out
    assert 0.0 < float(trainer.callback_metrics["test/ap"]) < 1.0
