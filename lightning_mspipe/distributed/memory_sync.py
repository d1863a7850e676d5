"""All-gather of memory writes: every rank applies the same merged write, so every rank holds the same memory.

Each step, every rank packs its :class:`~lightning_mspipe.memory.store.MemoryWrite` into one
byte buffer, the ranks all-gather the buffers' sizes and then the buffers (two collectives on a
process group of their own), and each rank merges the ``W`` writes in rank order
(:func:`~lightning_mspipe.memory.exchange.merge_writes`). The writer lane calls it in batch order,
off the training thread; evaluation calls it on the main thread while the writer is idle.

Cost per step: ``W · max_r(bytes_r)`` received per rank, where a rank's write of ``b`` events
has at most ``2b`` memory rows (8 + 4·D + 8 bytes each, float32 memory) and ``2b`` mails
(8 + 4·D_mail + 8 + 1 bytes each; APAN also mails up to ``2b·K`` neighbours).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_mspipe.memory.exchange import merge_writes, own_mail_mask
from lightning_mspipe.memory.store import MemoryWrite

__all__ = ["MemoryWriteAllGather", "pack_write", "unpack_write"]

_ROW_FIELDS = ("nodes", "memory", "last_update")  # one row per written node (W of them); the rest: per mail


def _with_own_mail(write: MemoryWrite) -> MemoryWrite:
    return MemoryWrite(**{**vars(write), "own_mail": own_mail_mask(write)})


def _row_bytes(template: Tensor) -> int:
    """Bytes of one row (one node or one mail) of a field."""
    return torch.Size(template.shape[1:]).numel() * template.element_size()


def _payload_bytes(sizes: Tensor, like: MemoryWrite) -> int:
    """Bytes of a packed write with ``sizes = [W, V]`` rows (``like``: a write of the same model)."""
    return sum(int(sizes[0 if f.name in _ROW_FIELDS else 1]) * _row_bytes(getattr(like, f.name))
               for f in fields(MemoryWrite))


def pack_write(write: MemoryWrite) -> tuple[Tensor, Tensor]:
    """One write as ``(sizes, payload)``: ``sizes = [W, V]`` int64 and every field's bytes, in field order.

    Shapes:
        - sizes: ``[2]`` int64; payload: ``[bytes]`` uint8 on the write's device
    """
    write = _with_own_mail(write)
    parts = [getattr(write, f.name).contiguous().reshape(-1).view(torch.uint8) for f in fields(MemoryWrite)]
    sizes = torch.tensor([write.nodes.numel(), write.mail_nodes.numel()], dtype=torch.int64, device=write.nodes.device)
    return sizes, torch.cat(parts)


def unpack_write(payload: Tensor, sizes: Tensor, like: MemoryWrite) -> MemoryWrite:
    """The write packed by :func:`pack_write` (``like``: a write of the same model, for dtypes and widths)."""
    like = _with_own_mail(like)
    values, offset = {}, 0
    for f in fields(MemoryWrite):
        template = getattr(like, f.name)
        rows = int(sizes[0 if f.name in _ROW_FIELDS else 1])
        count = rows * _row_bytes(template)
        # a copy: the slice may not be aligned for the field's dtype
        values[f.name] = payload[offset : offset + count].clone().view(template.dtype).reshape(rows, *template.shape[1:])
        offset += count
    return MemoryWrite(**values)


class MemoryWriteAllGather:
    """Gathers every rank's memory write and returns the merged one, on a process group of its own.

    The group is created on construction, a collective call: every rank must construct it at
    the same point. Its own group keeps the exchange from interleaving with DDP's gradient
    all-reduces on the default group (the writer lane calls it from its thread).

    Args:
        timeout: Seconds a gather may wait for the other ranks before it raises.
        backend: Backend of the group (``"gloo"`` for CPU tensors, ``"nccl"`` for CUDA tensors).

    Attributes:
        bytes_gathered: Bytes each rank received in the last exchange (sizes and padding included).
        bytes_total, exchanges: Their sum over all exchanges so far, and how many there were.
    """

    def __init__(self, timeout: float, backend: str | None = None) -> None:
        self.group = dist.new_group(backend=backend, timeout=timedelta(seconds=timeout))
        self.world_size = dist.get_world_size(self.group)
        self.timeout = timeout
        self.bytes_gathered = self.bytes_total = self.exchanges = 0

    def __call__(self, index: int, write: MemoryWrite) -> MemoryWrite:
        """The writer lane's ``exchange``: the merged write of batch ``index``."""
        return self.exchange(write)

    def exchange(self, write: MemoryWrite) -> MemoryWrite:
        """All ranks' writes of the same global batch, merged in rank order (two all-gathers)."""
        sizes, payload = pack_write(write)
        all_sizes = [torch.empty_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes, group=self.group)
        counts = torch.stack(all_sizes).cpu()  # [W, 2]: one host sync for all ranks' sizes
        lengths = [_payload_bytes(c, write) for c in counts]
        longest = max(lengths)
        padded = torch.zeros(longest, dtype=torch.uint8, device=payload.device)
        padded[: payload.numel()] = payload
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded, group=self.group)
        self.bytes_gathered = self.world_size * (longest + sizes.numel() * sizes.element_size())
        self.bytes_total += self.bytes_gathered
        self.exchanges += 1
        writes = [unpack_write(buf, c, write) for buf, c in zip(gathered, counts)]
        return merge_writes(writes)
