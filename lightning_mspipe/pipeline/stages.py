"""The pipeline's stage functions.

Stage 1 (sample) and stage 2 (fetch features) are methods of
:class:`~lightning_mspipe.data.loader.TemporalBatchLoader`; stage 4 is the model's step; stage 5
(write memory) goes through the model's :class:`~lightning_mspipe.memory.writer.MemoryWriter`. This module
holds stage 3, which both the plain training step and the pipeline call, so that the two paths
compute the same thing.
"""

from __future__ import annotations

import torch

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemoryStore

__all__ = ["fetch_memory"]


def fetch_memory(store: MemoryStore, batch: TemporalBatch, device: torch.device | None = None) -> TemporalBatch:
    """Stage 3: gather the memory of the batch's roots and neighbours into ``batch.memory``.

    The batch's nodes (roots, then neighbour slots) are deduplicated; ``batch.memory_index`` maps
    each of them to its row of the snapshot. The snapshot is a copy taken under the store's lock
    and records the memory version it saw.

    Args:
        store: The memory store.
        batch: A batch with sampled neighbours (stage 1 done).
        device: Where to put the snapshot (default: the store's device).

    Shapes:
        - nodes gathered: ``[U]`` unique of ``R + R·K`` roots and neighbour slots
    """
    if batch.neighbors is None:
        raise ValueError(f"fetch_memory: batch {batch.index} has no sampled neighbours (run stage 1 first).")
    nodes = torch.cat([batch.roots(), batch.neighbors.nodes.reshape(-1)]).to(store.device)
    unique, inverse = torch.unique(nodes, return_inverse=True)
    snapshot = store.gather(unique)
    target = device if device is not None else store.device
    batch.memory = snapshot.to(target, non_blocking=True) if target != store.device else snapshot
    batch.memory_index = inverse.to(target, non_blocking=True)
    return batch
