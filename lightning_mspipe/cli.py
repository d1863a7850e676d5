"""The ``mspipe`` command: LightningCLI over the models and the TemporalDataModule.

``mspipe fit`` with no arguments trains TGN for a few epochs on the built-in synthetic stream
and then tests it. ``mspipe fit --model JODIE --data.path FILE`` trains on a file;
``mspipe fit --config recipes/tgn_wikipedia.yaml`` runs a recipe.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_mspipe import __version__
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.models import MemoryTGNN

__all__ = ["MSPipeCLI", "main"]


class MSPipeCLI(LightningCLI):
    """LightningCLI with the data module's sizes linked into the model and a test after ``fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_nodes", "model.init_args.num_nodes", apply_on="instantiate")
        parser.link_arguments("data.edge_dim", "model.init_args.edge_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Run the test set after `fit`.")
        parser.set_defaults(
            {
                "model": {"class_path": "lightning_mspipe.models.TGN"},
                "trainer.max_epochs": 3,
            }
        )

    def after_fit(self) -> None:
        """Test the fitted model (memory continues from validation), unless ``--test_after_fit false``."""
        if self.config[self.subcommand].get("test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mspipe`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-V"]):
        print(f"lightning-mspipe {__version__}")
        return
    MSPipeCLI(
        MemoryTGNN,
        TemporalDataModule,
        subclass_mode_model=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":  # pragma: no cover
    main()
