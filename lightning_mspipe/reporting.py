"""Histograms and images to Lightning's loggers, each in the richest form the logger supports.

Every logger gets plain scalars through ``pl_module.log`` (the callbacks do that); these helpers
add what only some loggers take: a histogram (W&B's ``wandb.Histogram``, TensorBoard's
``add_histogram``) and a picture (W&B's ``log_image``, TensorBoard's ``add_image``). Any other
logger (CSV) is skipped here: it has the scalars, and pictures are saved as files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["histogram_scalars", "log_histogram", "log_image", "wandb_logger"]

log = logging.getLogger(__name__)


def histogram_scalars(prefix: str, counts: Mapping[int, int], upto: int) -> dict[str, float]:
    """One scalar per bucket ``0 … upto``: ``{f"{prefix}/{k}": count of k}`` (0 for an empty bucket).

    The form every logger takes (a CSV file gets one column per bucket).
    """
    return {f"{prefix}/{k}": float(counts.get(k, 0)) for k in range(upto + 1)}


@rank_zero_only
def log_histogram(loggers: Iterable[Logger], name: str, counts: Mapping[int, int], step: int) -> None:
    """Send the integer histogram ``counts`` (value → how often) as a histogram where the logger takes one.

    W&B gets a ``wandb.Histogram`` with one bin per integer; TensorBoard gets ``add_histogram`` of
    the values. Other loggers are skipped.
    """
    if not counts:
        return
    upto = max(counts)
    bins = np.arange(upto + 2, dtype=np.float64) - 0.5  # one bin per integer 0 … upto
    frequencies = np.array([counts.get(k, 0) for k in range(upto + 1)], dtype=np.float64)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb  # present: the logger could not exist without it

            logger.log_metrics({name: wandb.Histogram(np_histogram=(frequencies, bins))}, step=step)
        elif isinstance(logger, TensorBoardLogger):
            values = np.repeat(np.arange(upto + 1, dtype=np.float64), frequencies.astype(np.int64))
            logger.experiment.add_histogram(name, values, global_step=step, bins=bins)


@rank_zero_only
def log_image(loggers: Iterable[Logger], name: str, path: Path, step: int) -> None:
    """Send the PNG at ``path`` as an image where the logger takes one (W&B, TensorBoard)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(name, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            import matplotlib.image

            pixels = matplotlib.image.imread(path)[..., :3]  # [H, W, 3] floats in 0 … 1 (no alpha)
            logger.experiment.add_image(name, pixels, global_step=step, dataformats="HWC")
        else:
            log.info("%s: %s does not take images; the picture is at %s", name, type(logger).__name__, path)


def wandb_logger(project: str, save_dir: str | Path) -> WandbLogger:
    """A :class:`~lightning.pytorch.loggers.WandbLogger` for ``project`` writing under ``save_dir``.

    With ``WANDB_MODE=offline`` it runs without network and keeps the run in
    ``save_dir/wandb/offline-run-*`` (``wandb sync`` uploads it later).

    Raises:
        ModuleNotFoundError: ``wandb`` is not installed (the message says how to install it).
    """
    try:
        import wandb  # noqa: F401
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "W&B logging needs the wandb package; run `pip install 'lightning-mspipe[wandb]'`."
        ) from error
    return WandbLogger(project=project, save_dir=str(save_dir))
