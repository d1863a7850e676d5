"""Staging tensors in one flat byte buffer, so that a batch crosses the host–device link in one copy.

:func:`plan` lays a list of tensors out in a byte buffer (each at an offset aligned to
:data:`ALIGN` bytes, so any dtype can be viewed there); :func:`pack` copies them in;
:func:`views` gives tensors of the same dtypes and shapes that are views of a buffer with the
same layout (the buffer on the other side of the copy). :class:`Arena` is one reusable buffer
(pinned host memory for asynchronous copies) that grows when a batch needs more room and never
shrinks. Everything here is plain tensor code: it runs on a CPU, and the device copy between
:func:`pack` and :func:`views` is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ALIGN", "Arena", "Slice", "pack", "plan", "views"]

ALIGN = 64  # bytes: every dtype's alignment, and a cache line


@dataclass(frozen=True)
class Slice:
    """Where one tensor lies in a staging buffer: byte ``offset``, ``dtype`` and ``shape``."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(torch.Size(self.shape).numel()) * torch.empty((), dtype=self.dtype).element_size()


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def plan(tensors: list[Tensor], start: int = 0) -> tuple[list[Slice], int]:
    """Lay ``tensors`` out one after the other from byte ``start``; return their slices and the end offset.

    Shapes:
        - any tensors; the layout takes ``Σ nbytes`` plus at most ``ALIGN − 1`` bytes per tensor
    """
    slices, offset = [], _aligned(start)
    for tensor in tensors:
        piece = Slice(offset, tensor.dtype, tuple(tensor.shape))
        slices.append(piece)
        offset = _aligned(offset + piece.nbytes)
    return slices, offset


def _view(buffer: Tensor, piece: Slice, base: int) -> Tensor:
    start = piece.offset - base
    return buffer[start : start + piece.nbytes].view(piece.dtype).view(piece.shape)


def pack(tensors: list[Tensor], slices: list[Slice], buffer: Tensor) -> None:
    """Copy each tensor into its slice of ``buffer`` (``[≥ end]`` uint8; a host copy, synchronous)."""
    for tensor, piece in zip(tensors, slices, strict=True):
        _view(buffer, piece, 0).copy_(tensor)


def views(buffer: Tensor, slices: list[Slice], base: int = 0) -> list[Tensor]:
    """Tensors viewing ``buffer`` at ``slices``, where byte 0 of ``buffer`` is byte ``base`` of the layout.

    ``base`` must be a multiple of :data:`ALIGN` (a copy of the layout from ``base`` on).
    """
    assert base % ALIGN == 0, f"staging views: base {base} is not a multiple of {ALIGN}"
    return [_view(buffer, piece, base) for piece in slices]


class Arena:
    """One reusable staging buffer of bytes; it grows (by reallocation) when asked for more, never shrinks.

    Args:
        pin: Allocate in pinned host memory (needs CUDA; asynchronous copies to and from a GPU).
        capacity: Initial size in bytes.
    """

    def __init__(self, pin: bool, capacity: int = 0) -> None:
        self.pin = pin
        self.buffer = self._allocate(capacity)

    def _allocate(self, nbytes: int) -> Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)

    def reserve(self, nbytes: int) -> Tensor:
        """The buffer, at least ``nbytes`` long (reallocated, contents dropped, when it is shorter).

        Only call it while no copy uses the buffer (a slot just acquired from the ring).
        """
        if self.buffer.numel() < nbytes:
            self.buffer = self._allocate(max(nbytes, 2 * self.buffer.numel()))
        return self.buffer
