"""The ``mspipe`` command: LightningCLI over the models and the TemporalDataModule.

``mspipe fit`` with no arguments trains TGN for 3 epochs on the built-in synthetic stream and
then tests it. ``mspipe fit --model JODIE --data.path FILE`` trains on a file;
``mspipe fit --config recipes/tgn_wikipedia.yaml`` runs a recipe; ``mspipe test --ckpt_path
FILE`` evaluates a checkpoint on the data it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import torch
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from typing_extensions import override

from lightning_mspipe import __version__
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.models import APAN, JODIE, TGN, MemoryTGNN

__all__ = ["MSPipeCLI", "main"]

MODELS = (TGN, JODIE, APAN)


class MSPipeArgumentParser(LightningArgumentParser):
    """A LightningArgumentParser whose errors about ``model`` name the models to choose from."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if message.startswith('Parser key "model"') and "import path" in message:
            names = ", ".join(model.__name__ for model in MODELS)
            message = (
                f"model: not a model name. The models are {names}; or give the import path of a "
                f"MemoryTGNN subclass (for example `--model my_package.MyModel`).\n{message}"
            )
        super().error(message, ex)


class MSPipeCLI(LightningCLI):
    """LightningCLI for memory-based TGNNs on event streams.

    The data module's ``num_nodes`` and ``edge_dim`` are linked into the model; ``--model`` takes
    ``TGN``, ``JODIE``, ``APAN`` or the import path of any :class:`MemoryTGNN` subclass; ``fit``
    tests the model afterwards (``--test_after_fit false`` skips it); with ``--ckpt_path``, the
    data module's settings saved in the checkpoint become the defaults, so ``mspipe test
    --ckpt_path FILE`` evaluates on the data the model was trained on.

    Args:
        model_class: Base class of the models (subclasses are selected with ``--model``).
        datamodule_class: The data module.
        **kwargs: Further arguments of :class:`~lightning.pytorch.cli.LightningCLI`.
    """

    def __init__(
        self,
        model_class: type[MemoryTGNN] = MemoryTGNN,
        datamodule_class: type[TemporalDataModule] = TemporalDataModule,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("parser_class", MSPipeArgumentParser)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault(
            "parser_kwargs", {"description": "Train memory-based temporal GNNs on event streams."}
        )
        super().__init__(model_class, datamodule_class, **kwargs)

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        del commands["predict"]  # the models have no predict_step
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

    def after_fit(self) -> None:
        """Test the fitted model (memory continues from validation), unless ``--test_after_fit false``."""
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        val = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        results = {**val, **self.trainer.test(self.model, datamodule=self.datamodule)[0]}
        if self.trainer.is_global_zero:
            shown = [
                f"{key} {results[key]:.4f}" for key in ("val/ap", "test/ap", "test/mrr") if key in results
            ]
            print("mspipe fit: " + ", ".join(shown))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mspipe`` console script (``argv``: the arguments, default ``sys.argv[1:]``)."""
    MSPipeCLI(args=argv)


if __name__ == "__main__":  # pragma: no cover
    main()
