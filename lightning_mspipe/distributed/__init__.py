"""Several devices and nodes: the DDP strategy, the all-gather of memory writes, rank slices, failure notices."""

from __future__ import annotations

from lightning_mspipe.distributed.memory_sync import MemoryWriteAllGather
from lightning_mspipe.distributed.slicing import slice_loss_scale
from lightning_mspipe.distributed.strategy import MSPipeDDPStrategy

__all__ = ["MSPipeDDPStrategy", "MemoryWriteAllGather", "slice_loss_scale"]
