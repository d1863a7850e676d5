"""PipelineStats: per-batch staleness, events/s and waits, in the logger and the progress bar."""

from __future__ import annotations

import csv

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from lightning_mspipe import TGN, MSPipeStrategy, PipelineStats

from tests.conftest import SMALL_MODEL, small_datamodule

STEPS = 4


def fit_and_read_metrics(tmp_path, strategy, every=1, stats=None, extra=()) -> tuple[L.Trainer, list[dict[str, str]]]:
    """Fit a small TGN for ``STEPS`` batches with PipelineStats and a CSVLogger (``log_every_n_steps=every``);
    the metrics rows."""
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=STEPS, limit_val_batches=1, num_sanity_val_steps=0,
        strategy=strategy, callbacks=[stats or PipelineStats(), *extra], logger=CSVLogger(tmp_path, name="run"),
        log_every_n_steps=every,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, dm)
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as file:
        return trainer, list(csv.DictReader(file))


def test_per_batch_metrics_land_in_the_logger_and_the_progress_bar(tmp_path):
    trainer, rows = fit_and_read_metrics(tmp_path, MSPipeStrategy(max_staleness=1))
    steps = [row for row in rows if row["pipeline/wait_ms"]]
    assert len(steps) == STEPS
    assert all(float(row["pipeline/staleness"]) in (0.0, 1.0) for row in steps)
    assert all(float(row["pipeline/events_per_s"]) > 0 for row in steps)
    assert all(float(row["pipeline/wait_ms"]) >= 0 for row in steps)
    # each batch's wait is its own share of the pipeline's total: together they are the total
    total_ms = 1e3 * trainer.strategy.pipeline.profile.total_wait
    assert sum(float(row["pipeline/wait_ms"]) for row in steps) == pytest.approx(total_ms, rel=1e-6, abs=1e-9)
    assert {"train/loss", "pipeline/staleness", "pipeline/events_per_s"} <= set(trainer.progress_bar_metrics)


def test_between_logging_steps_nothing_is_logged_and_the_wait_is_the_mean_since_the_last_log(tmp_path):
    """Each ``LightningModule.log`` costs about 0.25 ms on a CPU, so the per-step values are logged only at the
    epoch's first batch (for the progress bar) and at the steps Lightning writes (here every second one)."""
    waits = []

    class TotalWait(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            waits.append(1e3 * trainer.strategy.pipeline.profile.total_wait)

    stats = PipelineStats(progress_interval=float("inf"))
    trainer, rows = fit_and_read_metrics(tmp_path, MSPipeStrategy(max_staleness=1), every=2, stats=stats,
                                         extra=[TotalWait()])
    steps = [row for row in rows if row["pipeline/wait_ms"]]
    assert [int(row["step"]) for row in steps] == [1, 3]
    assert float(steps[0]["pipeline/wait_ms"]) == pytest.approx(waits[1] - waits[0], rel=1e-6, abs=1e-9)  # batch 0 logged itself
    assert float(steps[1]["pipeline/wait_ms"]) == pytest.approx((waits[3] - waits[1]) / 2, rel=1e-6, abs=1e-9)


def test_without_the_pipeline_staleness_is_zero_and_no_wait_is_logged(tmp_path):
    _, rows = fit_and_read_metrics(tmp_path, "auto")
    steps = [row for row in rows if row["pipeline/staleness"]]
    assert len(steps) == STEPS and all(float(row["pipeline/staleness"]) == 0.0 for row in steps)
    assert "pipeline/wait_ms" not in rows[0]


def test_the_logged_bound_follows_autos_choice_over_time(tmp_path):
    """Under ``"auto"`` the per-step ``pipeline/bound`` is 0 while the pipeline measures inline, then the
    bound it chose (⌈(τ3 + τ4 + τ5) / P⌉ − 1 ≥ 1 once fetch, step and write all take time)."""
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    trainer = L.Trainer(
        max_epochs=1, limit_val_batches=1, num_sanity_val_steps=0,
        strategy=MSPipeStrategy(max_staleness="auto"), callbacks=[PipelineStats()],
        logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, dm)
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as file:
        bounds = [int(float(row["pipeline/bound"])) for row in csv.DictReader(file) if row["pipeline/bound"]]
    pipeline = trainer.strategy.pipeline
    chosen = pipeline.choices[0]["max_staleness"]
    inline = pipeline.auto.phase_length(trainer.num_training_batches)
    assert chosen >= 1 and len(bounds) == trainer.num_training_batches
    assert bounds[:inline] == [0] * inline and bounds[-1] == pipeline.bound == chosen
    assert set(bounds) == {0, chosen}
