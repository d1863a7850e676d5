"""Cosine similarity of node memory: a chunked top-k in bounded memory and the table built from it.

The top-k of an ``A × A`` similarity matrix is taken block by block: each block compares at
most ``chunk`` rows with at most ``chunk`` columns, and each row keeps a running top-k merged
with every block, so the largest buffer is ``chunk × (chunk + k)`` scores whatever ``A`` is
(the matrix never exists; at ``A = 10^6`` a ``chunk × A`` row block alone would take 16 GB
with ``chunk = 4096``). The cost stays ``O(A² · D)`` per build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lightning_mspipe.memory.store import MemoryStore
from lightning_mspipe.mitigation import Candidates

__all__ = ["CosineNeighbors", "cosine_top_k", "similarity_blocks"]


def similarity_blocks(unit: Tensor, chunk: int) -> Iterator[tuple[int, int, Tensor]]:
    """Blocks of the cosine-similarity matrix of unit rows, each at most ``chunk × chunk``.

    Yields ``(row_start, col_start, block)`` row chunk by row chunk, every column chunk of a row
    chunk before the next row chunk; a row's similarity with itself is ``-inf``.

    Shapes:
        - unit: ``[A, D]`` rows of norm 1 (or 0); block: ``[≤ chunk, ≤ chunk]``
    """
    if chunk < 1:
        raise ValueError(f"similarity_blocks: chunk must be ≥ 1 row, got {chunk}.")
    count = unit.shape[0]
    for row_start in range(0, count, chunk):
        rows = unit[row_start : row_start + chunk]
        row_ids = torch.arange(row_start, row_start + rows.shape[0], device=unit.device)
        for col_start in range(0, count, chunk):
            cols = unit[col_start : col_start + chunk]
            block = rows @ cols.t()
            col_ids = torch.arange(col_start, col_start + cols.shape[0], device=unit.device)
            block.masked_fill_(row_ids.unsqueeze(1) == col_ids.unsqueeze(0), float("-inf"))
            yield row_start, col_start, block


def cosine_top_k(memory: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """For each row, the ``min(k, A − 1)`` other rows of highest cosine similarity, most similar first.

    Memory use is bounded by ``chunk × (chunk + k)`` scores (see :func:`similarity_blocks`).

    Args:
        memory: ``[A, D]`` rows.
        k: Neighbours per row.
        chunk: Rows and columns per block.

    Returns:
        ``[A, min(k, A − 1)]`` int64 row indices.
    """
    count = memory.shape[0]
    k = min(k, count - 1)
    if k < 1:
        return torch.empty(count, 0, dtype=torch.int64, device=memory.device)
    unit = torch.nn.functional.normalize(memory.float(), dim=1)
    table = torch.empty(count, k, dtype=torch.int64, device=memory.device)
    best_score = best_index = None
    for row_start, col_start, block in similarity_blocks(unit, chunk):
        if col_start == 0:  # a new row chunk: start its running top-k
            best_score = torch.full((block.shape[0], k), float("-inf"), device=memory.device)
            best_index = torch.full((block.shape[0], k), -1, dtype=torch.int64, device=memory.device)
        assert best_score is not None and best_index is not None
        col_ids = torch.arange(col_start, col_start + block.shape[1], device=memory.device)
        scores = torch.cat([best_score, block], dim=1)  # [rows, k + cols]
        picked = scores.topk(k, dim=1)
        best_score = picked.values
        best_index = torch.cat([best_index, col_ids.expand(block.shape[0], -1)], dim=1).gather(1, picked.indices)
        if col_start + block.shape[1] >= count:  # the row chunk's last block
            table[row_start : row_start + block.shape[0]] = best_index
    return table


class CosineNeighbors:
    """A table of each node's ``top_k`` most cosine-similar nodes by memory.

    Only the ``active`` nodes (a mail was ever delivered to them) take part. The table is part
    of :meth:`state_dict`, so a resumed run blends with the same table.

    Args:
        top_k: Similar nodes kept per node.
        chunk: Block size of :func:`cosine_top_k` (memory bound ``chunk × (chunk + top_k)``).

    Shapes:
        - table: ``[N, top_k]`` int64 node ids, ``-1`` where there is no similar node
    """

    def __init__(self, top_k: int, chunk: int = 2048) -> None:
        if top_k < 1:
            raise ValueError(f"CosineNeighbors: top_k must be ≥ 1, got {top_k}.")
        if chunk < 1:
            raise ValueError(f"CosineNeighbors: chunk must be ≥ 1, got {chunk}.")
        self.top_k, self.chunk = top_k, chunk
        self.table: Tensor | None = None

    def rebuild(self, memory: Tensor, active: Tensor) -> None:
        """Recompute the table from ``memory`` ``[N, D]`` over the ``active`` ``[N]`` bool nodes."""
        nodes = active.nonzero().squeeze(1)
        table = torch.full((memory.shape[0], self.top_k), -1, dtype=torch.int64, device=memory.device)
        similar = cosine_top_k(memory[nodes], self.top_k, self.chunk)
        table[nodes, : similar.shape[1]] = nodes[similar]
        self.table = table

    def candidates(self, nodes: Tensor, store: MemoryStore) -> Candidates:
        """The similar nodes of ``nodes`` ``[b]`` with their current memory read from ``store``
        (:class:`~lightning_mspipe.mitigation.Candidates`; a gather of ``b · top_k`` rows)."""
        if self.table is None:
            raise RuntimeError("CosineNeighbors: the table is empty; call rebuild() first.")
        similar = self.table[nodes.to(self.table.device)]
        snapshot = store.gather(similar.clamp(min=0).reshape(-1).to(store.device))
        shape = similar.shape
        return Candidates(snapshot.memory.view(*shape, -1), snapshot.last_update.view(shape), similar >= 0)

    def state_dict(self) -> dict[str, Any]:
        return {"table": self.table}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table = state["table"]
