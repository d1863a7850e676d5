"""Rank slices of a global batch: the loss scale that makes DDP's gradient average equal one process's gradient."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["scale_step_output", "slice_loss_scale"]


def slice_loss_scale(size: int, global_size: int | None, world_size: int) -> float:
    """Factor for a rank's loss (a mean over its slice) so that DDP's averaged gradient is one process's.

    Each rank's loss is a mean over its ``b_r`` events; DDP averages the ``W`` ranks' gradients.
    Scaled by ``W · b_r / B`` (``B = Σ b_r``, the global batch), the average is
    ``(1/W) Σ_r W · b_r / B · mean_r = (1/B) Σ_r sum_r``: the gradient of the mean over the
    global batch, whatever the slices' sizes (the last batch of an epoch splits unevenly).

    Args:
        size: Events of this rank's slice ``b_r``.
        global_size: Events of the global batch ``B`` (``None``: the slice is the global batch).
        world_size: Ranks ``W``.
    """
    if global_size is None:
        return 1.0
    if not 0 < size <= global_size:
        raise ValueError(f"slice_loss_scale: a slice of {size} events of a global batch of {global_size}.")
    return world_size * size / global_size


def scale_step_output(output: Any, scale: float) -> Any:
    """A training step's output with its loss multiplied by ``scale`` (a tensor, or a dict with ``"loss"``)."""
    if scale == 1.0 or output is None:
        return output
    if isinstance(output, Tensor):
        return output * scale
    if isinstance(output, dict) and "loss" in output:
        return {**output, "loss": output["loss"] * scale}
    raise TypeError(
        f"MSPipeDDPStrategy: training_step returned {type(output).__name__}; it must return the loss tensor or a "
        "dict with 'loss', which the strategy scales by the rank's share of the global batch."
    )
