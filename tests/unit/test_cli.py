"""The ``mspipe`` command (lightning_mspipe/cli.py) and the recipes in recipes/."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import yaml
from typing_extensions import override

from lightning_mspipe import MSPipeDDPStrategy, MSPipeStrategy, __version__
from lightning_mspipe.cli import CommandLineError, MSPipeCLI, main
from lightning_mspipe.data import load_events

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = [
    *("--data.synthetic_events", "2000", "--data.synthetic_nodes", "200", "--data.batch_size", "200"),
    *("--data.mrr_negatives", "5", "--trainer.max_epochs", "1"),
    *("--model.memory_dim", "16", "--model.time_dim", "8", "--model.embedding_dim", "16"),
]
SUMMARY = re.compile(r"mspipe fit: val/ap ([\d.]+), test/ap ([\d.]+), test/mrr ([\d.]+)")


@pytest.fixture(autouse=True)
def _in_process_cli(monkeypatch):
    """``main(argv)`` is the only source of arguments (pytest's own argv would make Lightning warn);
    one intra-op thread: the tiny models gain nothing from more, and spinning OpenMP threads
    stall badly when other processes share the cores."""
    monkeypatch.setattr(sys, "argv", ["mspipe"])
    monkeypatch.delenv("MSPIPE_DEBUG", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ParseOnlyCLI(MSPipeCLI):
    """Parses and validates a configuration without building data, model or trainer."""

    @override
    def instantiate_classes(self) -> None:
        pass


def test_version_and_console_script(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"lightning-mspipe {__version__}\n"
    (script,) = entry_points(group="console_scripts", name="mspipe")
    assert script.value == "lightning_mspipe.cli:main"


def test_help_lists_the_commands_that_work(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "{fit,validate,test,profile}" in out and "--version" in out


def test_fit_then_test_from_the_checkpoint(tmp_path, capsys):
    main(["fit", *TINY, *QUIET, "--trainer.default_root_dir", str(tmp_path)])
    match = SUMMARY.search(capsys.readouterr().out)
    assert match, "`mspipe fit` prints val/ap, test/ap and test/mrr after testing"
    val_ap, test_ap, test_mrr = map(float, match.groups())
    assert 0.0 < val_ap < 1.0 and 0.0 < test_ap < 1.0 and 0.0 < test_mrr <= 1.0

    # `mspipe test --ckpt_path` alone: the data settings come from the checkpoint, and memory
    # continues from the end of validation as it did after fit, so test AP is the same.
    (ckpt,) = (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    cli = MSPipeCLI(
        args=["test", "--ckpt_path", str(ckpt), *QUIET, "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.datamodule.num_nodes == 200 and cli.datamodule.hparams.mrr_negatives == 5
    assert float(cli.trainer.callback_metrics["test/ap"]) == pytest.approx(test_ap, abs=1e-4)


def test_jodie_on_uci_from_a_file(tmp_path, capsys, datasets_dir):
    main(
        [
            *("fit", "--model", "JODIE", "--data.path", str(datasets_dir / "uci" / "ml_uci.csv.gz")),
            *("--data.read_options", '{"edge_features": false, "node_features": false}'),
            *("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"),
            *("--trainer.limit_test_batches", "1", "--trainer.max_epochs", "1", "--data.mrr_negatives", "5"),
            *QUIET,
            *("--trainer.default_root_dir", str(tmp_path)),
        ]
    )
    assert SUMMARY.search(capsys.readouterr().out)
    run = tmp_path / "lightning_logs" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["class_path"] == "lightning_mspipe.JODIE"  # the public import path
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert (hparams["num_nodes"], hparams["edge_dim"]) == (
        1899,
        0,
    )  # linked from the data; zero features skipped


@pytest.mark.parametrize(
    "args",
    [["--model", "GraphSAGE"], ["--model.class_path", "GraphSAGE"], ["--config", "bad.yaml"]],
    ids=["flag", "class_path", "yaml"],
)
def test_an_unknown_model_lists_the_models(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("model: GraphSAGE\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "mspipe: error: model: not a model name. The models are TGN, JODIE, APAN, EdgeBank; or give the import "
        "path of a LightningModule, e.g. a MemoryTGNN subclass (for example `--model my_package.MyModel`).\n"
    )


USER_ERRORS = {
    "missing_file": (["--data.path", "no/such.csv"], "`load_events`: no such file: no/such.csv"),
    "unknown_format": (
        ["--data.path", "events.csv", "--data.format", "xml"],
        "unknown format 'xml'; the formats are",
    ),
    "unknown_data_set": (["--data.name", "wiki"], "`load_dataset`: unknown data set 'wiki'; the data sets are"),
    "data_set_offline": (
        ["--data.name", "uci", "--data.read_options", '{"cache_dir": "cache", "url": "offline"}'],
        "`load_dataset`: cannot get uci (DyGLib's processed data",
    ),
    "not_an_int": (["--data.batch_size", "many"], "data.batch_size: expected int, got 'many'"),
    "model_argument": (["--model.memory_dim", "wide"], "model.memory_dim: expected int, got 'wide'"),
    "int_or_none": (["--trainer.max_epochs", "x"], "trainer.max_epochs: expected int or None, got 'x'"),
    "unknown_option": (["--data.batchsize", "5"], "unrecognized arguments: --data.batchsize 5"),
    "rejected_value": (["--data.sampling", "latest"], "TemporalDataModule: unknown sampling 'latest'"),
    "rejected_strategy_value": (
        ["--trainer.strategy", "mspipe", "--trainer.strategy.max_staleness", "-1"],
        "max_staleness must be ≥ 0 (0 is synchronous training), got -1.",
    ),
    "too_small_for_the_split": (
        ["--data.synthetic_events", "100"],
        "TemporalDataModule: batch_size 200 is larger than the train split of synthetic",
    ),
}


@pytest.mark.parametrize(("args", "message"), USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_a_user_error_prints_one_line_and_exits_with_status_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events.csv").write_text("src,dst,t\n0,1,1\n1,2,2\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mspipe: error: ") and err.count("\n") == 1, err
    assert message in err


def test_a_data_set_name_parses_and_trains(tmp_path, monkeypatch, capsys):
    assert ParseOnlyCLI(args=["--data.name", "wikipedia"], run=False).config.data.name == "wikipedia"
    monkeypatch.setenv("MSPIPE_DATA", str(tmp_path))
    rows = [f"{e % 40},{e % 7},{e}.0,0" for e in range(2000)]
    (tmp_path / "lastfm.csv").write_text("user_id,item_id,timestamp,state_label\n" + "\n".join(rows) + "\n")
    tiny_model = TINY[4:]  # TINY without the synthetic stream's size
    main(["fit", "--data.name", "lastfm", *tiny_model, *QUIET, "--trainer.default_root_dir", str(tmp_path)])
    assert SUMMARY.search(capsys.readouterr().out)


def test_debug_flag_anywhere_raises_with_the_traceback():
    with pytest.raises(CommandLineError, match="batch_size must be ≥ 1, got 0") as error:
        main(["fit", "--data.batch_size", "0", "--debug"])
    assert isinstance(error.value.__cause__, ValueError)  # the data module's own error, with its traceback


def test_debug_environment_variable_keeps_the_parser_details(monkeypatch):
    monkeypatch.setenv("MSPIPE_DEBUG", "1")
    with pytest.raises(CommandLineError, match="expected int, got 'many'") as error:
        main(["fit", "--data.batch_size", "many"])
    assert "Parser key \"data.batch_size\"" in str(error.value.__cause__)


def test_the_console_command_exits_with_status_2_and_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "lightning_mspipe.cli", "fit", "--data.batch_size", "many"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert (done.returncode, done.stderr) == (2, "mspipe: error: data.batch_size: expected int, got 'many'\n")


def test_every_model_and_data_set_has_a_recipe():
    data_sets = ("synthetic", "wikipedia", "uci", "enron", "uslegis")
    expected = {f"{m}_{d}.yaml" for m in ("tgn", "jodie", "apan") for d in data_sets}
    assert {p.name for p in RECIPES.glob("*.yaml")} == expected


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_parses(recipe):
    config = ParseOnlyCLI(args=["--config", str(RECIPES / recipe)], run=False).config
    model = {"tgn": "TGN", "jodie": "JODIE", "apan": "APAN"}[recipe.split("_")[0]]
    assert config.model.class_path == f"lightning_mspipe.models.{model}"
    assert config.model.init_args.memory_dim == 100 and config.model.init_args.lr == pytest.approx(1e-4)
    assert config.data.batch_size == 600 and config.data.num_neighbors == 10
    assert config.trainer.strategy.class_path == "lightning_mspipe.MSPipeStrategy"
    assert config.trainer.strategy.init_args.max_staleness == "auto"
    assert [callback.class_path for callback in config.trainer.callbacks] == [
        "lightning_mspipe.PipelineStats"
    ]
    if recipe.endswith("_synthetic.yaml"):
        assert config.data.path is None
    else:
        assert config.data.path.startswith("../shared/datasets/")
        assert (ROOT / config.data.path).is_file(), "recipe paths are relative to the repository root"


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_trains_through_the_pipeline(recipe, monkeypatch, tmp_path):
    """Each recipe as written (model, data, strategy): two training batches of 200, one validation batch."""
    monkeypatch.chdir(ROOT)  # recipe paths are relative to the repository root
    brief = [
        *("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"),
        *("--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0", "--data.batch_size", "200"),
        *("--test_after_fit", "false", "--trainer.logger", "false"),
        *("--trainer.enable_checkpointing", "false", "--trainer.default_root_dir", str(tmp_path)),
    ]
    cli = MSPipeCLI(args=["fit", "--config", str(RECIPES / recipe), *brief, *QUIET])
    trainer = cli.trainer
    assert isinstance(trainer.strategy, MSPipeStrategy) and trainer.strategy.max_staleness == "auto"
    assert trainer.global_step == 2 and trainer.strategy.pipeline.profile.batches == 2
    assert 0.0 <= float(trainer.callback_metrics["val/ap"]) <= 1.0
    assert {"train/loss", "pipeline/events_per_s", "pipeline/staleness"} <= set(trainer.progress_bar_metrics)


@pytest.mark.parametrize(
    ("data_set", "num_nodes", "edge_dim"),
    [("wikipedia", 9227, 0), ("uci", 1899, 0), ("enron", 184, 0), ("uslegis", 225, 1)],
)
def test_recipe_reader_options_read_the_data(data_set, num_nodes, edge_dim):
    data = ParseOnlyCLI(args=["--config", str(RECIPES / f"tgn_{data_set}.yaml")], run=False).config.data
    events = load_events(ROOT / data.path, format=data.format, **(data.read_options or {}))
    assert (events.num_nodes, events.edge_dim) == (num_nodes, edge_dim)


def test_fit_with_the_pipeline_strategy_from_a_config(tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "trainer:\n  strategy:\n    class_path: lightning_mspipe.MSPipeStrategy\n"
        "    init_args:\n      max_staleness: 1\n      mode: exact\n"
    )
    cli = MSPipeCLI(args=["fit", "--config", str(config), *TINY, *QUIET, "--trainer.default_root_dir", str(tmp_path)])
    assert type(cli.trainer.strategy).__name__ == "MSPipeStrategy" and cli.trainer.strategy.max_staleness == 1
    assert cli.trainer.strategy.pipeline is not None and cli.trainer.strategy.pipeline.profile.batches > 0
    assert SUMMARY.search(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("args", "max_staleness"),
    [
        (["--trainer.strategy", "mspipe", "--trainer.strategy.max_staleness", "auto"], "auto"),
        (
            ["--trainer.strategy=mspipe", "--trainer.strategy.max_staleness=0", "--trainer.strategy.mode=exact"],
            0,
        ),
        (["--trainer.strategy", "mspipe"], 2),  # a name alone stays a name: Lightning's registry builds it
    ],
    ids=["name_then_argument", "equals_signs", "name_alone"],
)
def test_the_strategy_name_takes_arguments(args, max_staleness, tmp_path):
    cli = MSPipeCLI(args=[*args, *TINY, *QUIET, "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert isinstance(cli.trainer.strategy, MSPipeStrategy)
    assert cli.trainer.strategy.max_staleness == max_staleness


PROTOCOLS = RECIPES / "protocols"


@pytest.mark.parametrize("recipe", sorted(p.name for p in PROTOCOLS.glob("*.yaml")))
def test_protocol_recipe_follows_dyglib(recipe):
    config = ParseOnlyCLI(args=["--config", str(PROTOCOLS / recipe)], run=False).config
    model = {"tgn": "TGN", "jodie": "JODIE", "apan": "APAN", "edgebank": "EdgeBank"}[recipe.split("_")[0]]
    assert config.model.class_path == f"lightning_mspipe.models.{model}"
    assert config.data.batch_size == 200 and config.data.train_negatives == "train_dst"
    assert config.data.eval_negatives == "dst" and (ROOT / config.data.path).is_file()
    if model != "EdgeBank":
        assert config.model.init_args.lr == pytest.approx(1e-4)
        callbacks = {c.class_path.rsplit(".", 1)[1]: c.init_args for c in config.trainer.callbacks}
        assert callbacks["EarlyStopping"].monitor == callbacks["ModelCheckpoint"].monitor == "val/ap"
        assert (config.trainer.max_epochs, callbacks["EarlyStopping"].patience) == (100, 20)  # DyGLib's budget


def test_protocol_recipes_are_a_product_of_model_and_data_set_settings():
    """The data section depends on the data set only, the rest on the model only; so a brief run of every
    model (tgn and edgebank in ``test_protocol_recipe_tests_the_best_checkpoint``) and of every data set
    runs every part of every protocol recipe."""
    by_model, by_data = {}, {}
    for path in PROTOCOLS.glob("*.yaml"):
        model, data_set = path.stem.split("_")
        config = yaml.safe_load(path.read_text())
        by_data.setdefault(data_set, []).append(config.pop("data"))
        by_model.setdefault(model, []).append(config)
    assert len(by_model) == 4 and len(by_data) == 4
    assert all(len(configs) == 4 and all(c == configs[0] for c in configs) for configs in by_model.values())
    assert all(len(configs) == 4 and all(c == configs[0] for c in configs) for configs in by_data.values())


@pytest.mark.parametrize("recipe", ["apan_uci", "jodie_uci", "jodie_enron", "jodie_uslegis", "jodie_wikipedia"])
def test_protocol_recipe_trains_briefly(recipe, monkeypatch, tmp_path):
    """A protocol recipe as written (model, data, negatives, callbacks): two training batches, one validation batch."""
    monkeypatch.chdir(ROOT)
    brief = [
        *("--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1"),
        *("--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false", "--test_after_fit", "false"),
    ]
    cli = MSPipeCLI(args=["fit", "--config", str(PROTOCOLS / f"{recipe}.yaml"), *brief, *QUIET,
                          "--trainer.default_root_dir", str(tmp_path)])
    assert cli.trainer.global_step == 2 and 0.0 <= float(cli.trainer.callback_metrics["val/ap"]) <= 1.0


@pytest.mark.parametrize("model", ["tgn", "edgebank"])
def test_protocol_recipe_tests_the_best_checkpoint(model, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)
    brief = [
        *("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2"),
        *("--trainer.max_epochs", "2", "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false"),
    ]
    cli = MSPipeCLI(args=["fit", "--config", str(PROTOCOLS / f"{model}_uci.yaml"), *brief, *QUIET,
                          "--trainer.default_root_dir", str(tmp_path)])
    if model == "tgn":
        assert cli.trainer.ckpt_path == cli.trainer.checkpoint_callback.best_model_path  # the test's checkpoint
    assert "test/ap" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "max_staleness"),
    [
        (["--trainer.strategy", "mspipe_ddp", "--trainer.strategy.max_staleness", "1",
          "--trainer.strategy.lr_scaling", "sqrt"], 1),
        (["--trainer.strategy", "mspipe_ddp"], 2),
    ],
    ids=["name_then_arguments", "name_alone"],
)
def test_the_ddp_strategy_name_takes_arguments(args, max_staleness, tmp_path):
    cli = MSPipeCLI(args=[*args, *TINY, *QUIET, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                          "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert isinstance(cli.trainer.strategy, MSPipeDDPStrategy) and cli.trainer.world_size == 2
    assert cli.trainer.strategy.max_staleness == max_staleness


def test_the_distributed_recipe_builds_the_ddp_strategy_on_two_processes(tmp_path):
    recipe = RECIPES / "distributed" / "tgn_synthetic_ddp.yaml"
    cli = MSPipeCLI(args=["--config", str(recipe), *QUIET, "--trainer.default_root_dir", str(tmp_path)],
                    run=False)
    assert isinstance(cli.trainer.strategy, MSPipeDDPStrategy) and cli.trainer.world_size == 2
    assert cli.trainer.strategy.max_staleness == "auto" and cli.datamodule.hparams.batch_size == 1200
