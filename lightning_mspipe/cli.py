"""The ``mspipe`` command: LightningCLI over the models and the TemporalDataModule.

``mspipe fit`` with no arguments trains TGN for 3 epochs on the built-in synthetic stream and
then tests it. ``mspipe fit --model JODIE --data.path FILE`` trains on a file;
``mspipe fit --config recipes/tgn_wikipedia.yaml`` runs a recipe; ``mspipe test --ckpt_path
FILE`` evaluates a checkpoint on the data it was trained on.

A mistake in the arguments or the configuration (an unknown model or format, a missing file, a
bad value, a data set too small for its split) prints one line, ``mspipe: error: ...``, and
exits with status 2; ``--debug`` (anywhere on the command line) or ``MSPIPE_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import StrategyRegistry
from typing_extensions import override

from lightning_mspipe import __version__
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.models import APAN, JODIE, TGN, EdgeBank
from lightning_mspipe.plots import plot_timelines
from lightning_mspipe.profiler import ProfileReport, profile_pipeline
from lightning_mspipe.reporting import log_image, wandb_logger

__all__ = [
    "CommandLineError", "MSPipeCLI", "MSPipeTrainer", "main", "strategy_names_as_classes", "summarize_parser_error",
]

MODELS = (TGN, JODIE, APAN, EdgeBank)
DEBUG_FLAG = "--debug"
DEBUG_ENV = "MSPIPE_DEBUG"
STRATEGY_FLAG = "--trainer.strategy"

# The shapes of jsonargparse's (4.x) messages that `summarize_parser_error` condenses; a message
# of another shape is kept whole, on one line.
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":?')
_EXPECTED = re.compile(r"Expected a (.+?)\. Got value: (.*)")
_UNION_ITEM = re.compile(r"^\s*- (.+)$", re.MULTILINE)
_SUBTYPES = re.compile(r"Subtypes: \[(.*)\]")
_GIVEN = re.compile(r"Given value: (.*)")
_CLASS = re.compile(r"<class '(?:\w+\.)*(\w+)'>")


class CommandLineError(Exception):
    """A mistake in the arguments or the configuration, said in one line.

    ``mspipe`` prints it as ``mspipe: error: <message>`` and exits with status 2; the exception
    it comes from (jsonargparse's, or the one a constructor raised) is its ``__cause__``.
    """


def summarize_parser_error(message: str) -> str:
    """Condense a jsonargparse error message to one line: the full key, the problem, the value given.

    jsonargparse nests ``Parser key "k":`` blocks (``memory_dim`` inside ``model``) and lists the
    alternatives of a union as ``- error`` lines, with the value given last. For example
    ``Parser key "data.batch_size": Expected a <class 'int'>. Got value: abc`` (on two lines)
    becomes ``data.batch_size: expected int, got 'abc'``; a union whose only error besides type
    mismatches is a constructor's ``ValueError`` becomes that error.
    """
    message = _CLASS.sub(lambda m: "None" if m[1] == "NoneType" else m[1], message)
    keys = _PARSER_KEY.findall(message)
    prefix = f"{'.'.join(keys)}: " if keys else ""
    innermost = message[list(_PARSER_KEY.finditer(message))[-1].end() :] if keys else message
    if expected := _EXPECTED.search(innermost):
        return f"{prefix}expected {expected[1]}, got {expected[2].strip()!r}"
    problems = [item for item in _UNION_ITEM.findall(innermost) if not item.startswith("Expected a ")]
    if len(problems) == 1:
        return prefix + problems[0].strip()
    subtypes, given = _SUBTYPES.search(innermost), _GIVEN.findall(innermost)
    if subtypes and given:
        return f"{prefix}expected {' or '.join(subtypes[1].split(', '))}, got {given[-1].strip()!r}"
    return prefix + " ".join(innermost.split())


def strategy_names_as_classes(args: Sequence[str]) -> list[str]:
    """Give ``--trainer.strategy NAME`` its class form when ``--trainer.strategy.*`` flags follow.

    jsonargparse reads a name from Lightning's ``StrategyRegistry`` (``mspipe``) as a plain string,
    which takes no arguments; the registered class with the registry's ``init_params`` does. So
    ``--trainer.strategy mspipe --trainer.strategy.max_staleness auto`` works like
    ``--trainer.strategy lightning_mspipe.MSPipeStrategy --trainer.strategy.max_staleness auto``.
    A name without arguments stays a name (Lightning resolves it).
    """
    args = list(args)
    for i, arg in enumerate(args):
        if arg == STRATEGY_FLAG and i + 1 < len(args):
            at, name = i + 1, args[i + 1]
        elif arg.startswith(f"{STRATEGY_FLAG}="):
            at, name = i, arg.partition("=")[2]
        else:
            continue
        nested = any(later.startswith(f"{STRATEGY_FLAG}.") for later in args[at + 1 :])
        if nested and name in StrategyRegistry:
            entry = StrategyRegistry[name]
            cls = entry["strategy"]
            class_path = f"{cls.__module__}.{cls.__qualname__}"
            value = json.dumps({"class_path": class_path, "init_args": entry["init_params"]})
            args[at] = value if at > i else f"{STRATEGY_FLAG}={value}"
    return args


class MSPipeArgumentParser(LightningArgumentParser):
    """A LightningArgumentParser that raises each error as a one-line :class:`CommandLineError`.

    An unknown ``--model`` names the models to choose from.
    """

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse is trying alternatives: it catches this error
            super().error(message, ex)
        if message.startswith('Parser key "model"') and "import path" in message:
            names = ", ".join(model.__name__ for model in MODELS)
            summary = (
                f"model: not a model name. The models are {names}; or give the import path of a "
                "LightningModule, e.g. a MemoryTGNN subclass (for example `--model my_package.MyModel`)."
            )
        else:
            summary = summarize_parser_error(message)
        raise CommandLineError(summary) from ex

    @override
    def parse_args(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Namespace:
        """Parse ``args`` (default ``sys.argv[1:]``) without ``--debug``, which :class:`MSPipeCLI` reads.

        A strategy name followed by strategy arguments takes its class form
        (:func:`strategy_names_as_classes`).
        """
        args = [arg for arg in (sys.argv[1:] if args is None else args) if arg != DEBUG_FLAG]
        return super().parse_args(strategy_names_as_classes(args), *rest, **kwargs)


class MSPipeTrainer(L.Trainer):
    """Lightning's Trainer with one more command, :meth:`profile` (``mspipe profile``)."""

    profile_report: ProfileReport | None = None
    """What the last :meth:`profile` measured."""

    def profile(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule,
        out: str = "pipeline_timeline.png",
        batches: int = 12,
        warmup: int = 2,
        slow_link_ms: float = 0.0,
        max_staleness: int | None = None,
    ) -> ProfileReport:
        """Draw the pipeline's stage timeline, sequential, at s = 0 and at the chosen s, into a PNG.

        Trains ``warmup + batches + 1`` batches with every stage on the training thread, again
        pipelined at ``s = 0``, and again at the bound ``"auto"`` would choose from the sequential
        run's stage times, from the same initial weights, on this trainer's device
        (:func:`~lightning_mspipe.profiler.profile_pipeline`); saves the picture
        (one panel per run, one lane per stage, a bar per batch) and sends it to the loggers that
        take images (W&B, TensorBoard).

        Args:
            model: A memory-based TGNN (TGN, JODIE, APAN).
            datamodule: Its data.
            out: The PNG to write.
            batches: Batches in each timeline.
            warmup: Batches trained before the timeline starts.
            slow_link_ms: Milliseconds added to every memory gather (stage 3) and write (stage 5),
                as a slow host-device link would (0: the real stage times).
            max_staleness: The last run's bound instead of the chosen one (at least 1).
        """
        report = profile_pipeline(
            model, datamodule, batches=batches, warmup=warmup, slow_link_ms=slow_link_ms,
            max_staleness=max_staleness, device=self.strategy.root_device,
        )
        path = plot_timelines(report.panels(), out)
        log_image(self.loggers, "pipeline/timeline", path, step=0)
        self.profile_report = report
        return report


class MSPipeCLI(LightningCLI):
    """LightningCLI for memory-based TGNNs on event streams.

    The data module's ``num_nodes`` and ``edge_dim`` are linked into the model; ``--model`` takes
    ``TGN``, ``JODIE``, ``APAN``, ``EdgeBank`` or the import path of any ``LightningModule``
    (a :class:`~lightning_mspipe.models.MemoryTGNN` subclass, typically); ``fit``
    tests the model afterwards (``--test_after_fit false`` skips it); with ``--ckpt_path``, the
    data module's settings saved in the checkpoint become the defaults, so ``mspipe test
    --ckpt_path FILE`` evaluates on the data the model was trained on.

    A :class:`CommandLineError` (a parser error, or a ``ValueError``, ``TypeError`` or ``OSError``
    while building data, model and trainer) prints ``mspipe: error: <one line>`` to stderr and
    raises ``SystemExit(2)``, unless ``debug``.

    Args:
        model_class: Base class of the models (subclasses are selected with ``--model``).
        datamodule_class: The data module.
        debug: Raise errors with their traceback instead. Default: ``--debug`` is among the
            arguments (anywhere; the parser drops it) or the environment variable ``MSPIPE_DEBUG``
            is set to anything but ``""`` or ``"0"``.
        **kwargs: Further arguments of :class:`~lightning.pytorch.cli.LightningCLI`.

    Raises:
        SystemExit: with status 2 on a mistake in the arguments or the configuration.
    """

    def __init__(
        self,
        model_class: type[L.LightningModule] = L.LightningModule,
        datamodule_class: type[TemporalDataModule] = TemporalDataModule,
        debug: bool | None = None,
        **kwargs: Any,
    ) -> None:
        argv = sys.argv[1:] if kwargs.get("args") is None else kwargs["args"]
        flagged = isinstance(argv, list) and DEBUG_FLAG in argv
        self.debug = (flagged or os.environ.get(DEBUG_ENV, "") not in ("", "0")) if debug is None else debug
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("trainer_class", MSPipeTrainer)
        kwargs.setdefault("parser_class", MSPipeArgumentParser)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault(
            "parser_kwargs",
            {
                "description": "Train memory-based temporal GNNs on event streams. A mistake in the "
                f"arguments prints one line; {DEBUG_FLAG} or {DEBUG_ENV}=1 shows the traceback."
            },
        )
        try:
            super().__init__(model_class, datamodule_class, **kwargs)
        except CommandLineError as error:
            if self.debug:
                raise
            print(f"mspipe: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        del commands["predict"]  # the models have no predict_step
        commands["profile"] = {"model", "datamodule"}  # MSPipeTrainer.profile
        return commands

    @override
    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.parser.add_argument(
            "-V", "--version", action="version", version=f"lightning-mspipe {__version__}"
        )

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_nodes", "model.init_args.num_nodes", apply_on="instantiate")
        parser.link_arguments("data.edge_dim", "model.init_args.edge_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Run the test set after `fit`.")
        parser.add_argument(
            "--wandb", type=bool, default=False,
            help="Also log to Weights & Biases (WANDB_MODE=offline runs without network).",
        )
        parser.add_argument("--wandb_project", type=str, default="lightning-mspipe", help="The W&B project.")
        parser.set_defaults({"model": {"class_path": "lightning_mspipe.TGN"}, "trainer.max_epochs": 3})

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse; with ``--ckpt_path``, parse again with the checkpoint's data settings as defaults."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True).get(
            "datamodule_hyper_parameters"
        )
        if saved:
            parser.set_defaults(
                {f"{subcommand}.data.{k}": v for k, v in saved.items() if not k.startswith("_")}
            )
            super().parse_arguments(parser, args)

    @override
    def instantiate_classes(self) -> None:
        """Build data, model and trainer (with ``--wandb``, add a W&B logger); a ``ValueError``,
        ``TypeError``, ``OSError`` or a missing optional package becomes a :class:`CommandLineError`."""
        try:
            super().instantiate_classes()
            if self._get(self.config, "wandb", default=False):
                project = self._get(self.config, "wandb_project", default="lightning-mspipe")
                self.trainer.loggers = [*self.trainer.loggers, wandb_logger(project, self.trainer.default_root_dir)]
        except (ValueError, TypeError, OSError) as error:
            raise CommandLineError(summarize_parser_error(str(error))) from error
        except ModuleNotFoundError as error:  # an optional extra (wandb) that is not installed
            raise CommandLineError(str(error)) from error

    def after_fit(self) -> None:
        """Test the fitted model (memory continues from validation), unless ``--test_after_fit false``.

        With a ``ModelCheckpoint`` that monitors a metric (the protocol recipes' ``val/ap``), the best
        checkpoint is tested, its memory included.
        """
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        val = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        checkpoint = self.trainer.checkpoint_callback
        best = "best" if checkpoint is not None and checkpoint.monitor and checkpoint.best_model_path else None
        results = {**val, **self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)[0]}
        if self.trainer.is_global_zero:
            shown = [
                f"{key} {results[key]:.4f}" for key in ("val/ap", "test/ap", "test/mrr") if key in results
            ]
            print("mspipe fit: " + ", ".join(shown))


    def profile(self, **kwargs: Any) -> None:
        """``mspipe profile``: :meth:`MSPipeTrainer.profile`; a mistake in its arguments (a model the
        pipeline cannot train, a bad count, matplotlib missing) becomes a :class:`CommandLineError`."""
        try:
            self.trainer.profile(**kwargs)
        except (ValueError, TypeError, ModuleNotFoundError) as error:
            raise CommandLineError(str(error)) from error

    def after_profile(self) -> None:
        """Print each run's training idle share and where the picture is."""
        report, out = self.trainer.profile_report, self.config["profile"]["out"]
        if report is not None and self.trainer.is_global_zero:
            runs = ", ".join(f"{title} idle {recorder.idle_share():.0%}" for title, recorder in report.panels().items())
            print(f"mspipe profile: training {runs}; picture {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mspipe`` console script (``argv``: the arguments, default ``sys.argv[1:]``)."""
    MSPipeCLI(args=argv)


if __name__ == "__main__":  # pragma: no cover
    main()
