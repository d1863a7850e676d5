"""What a run sends to its loggers: a CSV logger's metrics.csv, a TensorBoard event file and an offline W&B
run's history."""

from __future__ import annotations

import csv
import struct
import sys
import time
from pathlib import Path

import lightning as L
import matplotlib.image
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lightning_mspipe import TGN, MSPipeStrategy, PipelineStats, PipelineTimeline, StalenessMitigation
from lightning_mspipe.cli import MSPipeCLI, main
from lightning_mspipe.dashboard import metric_keys
from tests.conftest import SMALL_MODEL, small_datamodule

STAGES = ("sample", "features", "memory", "train", "write")
# what a person watches: loss, quality, speed, stage times, bubbles, the bound, staleness, mitigation
PIPELINE_KEYS = {
    "train/loss", "val/ap", "val/auroc", "test/ap", "test/auroc", "test/mrr", "pipeline/events_per_s",
    *(f"pipeline/{stage}_ms" for stage in STAGES), "pipeline/idle_share", "pipeline/bound",
    "pipeline/max_staleness", "pipeline/staleness_hist/0", "pipeline/staleness_hist/1",
}
TINY_CLI = [
    *("--data.synthetic_events", "2000", "--data.synthetic_nodes", "200", "--data.batch_size", "200"),
    *("--data.mrr_negatives", "5", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4"),
    *("--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--trainer.num_sanity_val_steps", "0"),
    *("--model.memory_dim", "16", "--model.time_dim", "8", "--model.embedding_dim", "16"),
    *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
    *("--trainer.log_every_n_steps", "1", "--trainer.enable_checkpointing", "false"),
]


pytestmark = pytest.mark.usefixtures("in_process_cli")


def test_a_csv_logger_receives_every_pipeline_metric(tmp_path):
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    strategy = MSPipeStrategy(max_staleness=1, mode="exact", mitigation=StalenessMitigation())
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=4, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0,
        strategy=strategy, callbacks=[PipelineStats()], logger=CSVLogger(tmp_path, name="run"),
        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    columns = set(rows[0])
    assert PIPELINE_KEYS | {"mitigation/blended_share"} <= columns
    # exact mode, s = 1: batch 0 reads version 0 (staleness 0), batches 1-3 miss one write each
    (epoch,) = [row for row in rows if row["pipeline/staleness_hist/0"]]
    assert (float(epoch["pipeline/staleness_hist/0"]), float(epoch["pipeline/staleness_hist/1"])) == (1.0, 3.0)
    assert [float(row["pipeline/bound"]) for row in rows if row["pipeline/bound"]] == [1.0] * 4


def test_a_tensorboard_logger_receives_the_scalars_the_staleness_histogram_and_the_timeline(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as tb  # the dev extra installs it

    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    strategy = MSPipeStrategy(max_staleness=1, mode="exact", mitigation=StalenessMitigation())
    picture = tmp_path / "timeline.png"
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=4, limit_val_batches=1, limit_test_batches=1, num_sanity_val_steps=0,
        strategy=strategy, callbacks=[PipelineStats(), PipelineTimeline(batches=2, first=1, path=picture)],
        logger=TensorBoardLogger(tmp_path, name="run"), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    everything = {tb.SCALARS: 0, tb.HISTOGRAMS: 0, tb.IMAGES: 0}
    events = tb.EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance=everything).Reload()
    assert PIPELINE_KEYS | {"mitigation/blended_share"} <= set(events.Tags()["scalars"])
    # exact mode, s = 1: batch 0 reads version 0 (staleness 0), batches 1-3 miss one write each
    (histogram,) = events.Histograms("pipeline/staleness_histogram")
    assert histogram.step == 4
    # right bin limits: an empty bin up to -0.5 (where the first bin starts), then one bin per staleness 0, 1
    assert list(histogram.histogram_value.bucket_limit) == [-0.5, 0.5, 1.5]
    assert list(histogram.histogram_value.bucket) == [0.0, 1.0, 3.0]
    (image,) = events.Images("pipeline/timeline")
    height, width = matplotlib.image.imread(picture).shape[:2]
    assert (image.step, image.width, image.height) == (4, width, height)
    assert image.encoded_image_string.startswith(b"\x89PNG")


def wandb_records(run_file: Path) -> list:
    """The protobuf ``Record``s of an offline W&B run file (``run-*.wandb``).

    The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each a
    7-byte header (CRC32, length, kind: 1 whole, 2 first, 3 middle, 4 last) and a piece of a
    protobuf ``Record``.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    records, position, pieces = [], 7, []
    while position + 7 <= len(data):
        left = block - position % block
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (length, kind) == (0, 0):  # the rest of the block is padding
            position += left
            continue
        pieces.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(b"".join(pieces)))
            pieces = []
    return records


def wandb_history_keys(tmp_path: Path, timeout: float = 60.0) -> set[str]:
    """Every metric name in the history of the offline run under ``tmp_path``, once the run file is complete.

    W&B's service writes the file; the test waits (at most ``timeout`` seconds) for its closing
    ``exit`` record.
    """
    deadline = time.monotonic() + timeout
    while True:
        files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) <= 1, f"more than one W&B run: {files}"
        records = wandb_records(files[0]) if files else []
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            break
        assert time.monotonic() < deadline, f"the offline W&B run under {tmp_path} was not closed within {timeout:g}s"
        time.sleep(0.2)
    history = [record.history for record in records if record.WhichOneof("record_type") == "history"]
    return {item.key or "/".join(item.nested_key) for entry in history for item in entry.item}


def test_mspipe_fit_with_wandb_offline_logs_every_key_of_the_dashboard(tmp_path, monkeypatch, capsys):
    import wandb  # the dev extra installs it
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    pipeline = ["--trainer.strategy", "mspipe", "--trainer.strategy.max_staleness", "1",
                "--trainer.strategy.mode", "exact",
                "--trainer.strategy.mitigation", "lightning_mspipe.StalenessMitigation",
                "--trainer.callbacks+=lightning_mspipe.PipelineStats",
                "--trainer.callbacks+=lightning_mspipe.PipelineTimeline", "--trainer.callbacks.batches", "2",
                "--trainer.callbacks.first", "1", "--trainer.callbacks.path", str(tmp_path / "timeline.png")]
    try:
        main(["fit", "--wandb", "true", *pipeline, *TINY_CLI, "--data.val_mrr", "true",
              "--trainer.default_root_dir", str(tmp_path)])
    finally:
        wandb.finish()
    assert "mspipe fit: val/ap" in capsys.readouterr().out
    keys = wandb_history_keys(tmp_path)
    assert PIPELINE_KEYS <= keys, sorted(PIPELINE_KEYS - keys)
    # a histogram or a picture is a W&B object, stored as its fields: `<key>/_type`, ...
    missing = {key for key in metric_keys() if key not in keys and f"{key}/_type" not in keys}
    assert not missing, f"the dashboard shows keys the run did not log: {sorted(missing)}"
    assert "pipeline/staleness_histogram/_type" in keys  # a wandb.Histogram, beside the per-bucket scalars


def test_the_lightning_way_selects_the_wandb_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = MSPipeCLI(args=["--trainer.logger", "WandbLogger", "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert isinstance(cli.trainer.logger, WandbLogger)


def test_a_config_file_turns_wandb_on_beside_the_default_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tmp_path / "recipe.yaml"
    config.write_text("wandb: true\nwandb_project: my-project\n")
    cli = MSPipeCLI(args=["--config", str(config), "--trainer.default_root_dir", str(tmp_path)], run=False)
    default, added = cli.trainer.loggers
    assert isinstance(default, (CSVLogger, TensorBoardLogger)) and isinstance(added, WandbLogger)
    assert added.name == "my-project" and Path(added.save_dir) == tmp_path


def test_wandb_flag_without_wandb_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--wandb", "true", "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "mspipe: error: W&B logging needs the wandb package; run `pip install 'lightning-mspipe[wandb]'`.\n"
    )
