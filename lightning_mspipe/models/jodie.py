"""JODIE: RNN memory updater and a time-projection embedding (Kumar et al., 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.updaters import MemoryUpdater, RNNUpdater
from lightning_mspipe.models.base import MemoryTGNN, _identity_or_linear

__all__ = ["JODIE"]


class JODIE(MemoryTGNN):
    """JODIE: RNN updater; a root's embedding is its memory projected forward in time,
    ``h = s ⊙ (1 + w · log1p(Δt))``, with Δt the time since the node's last event. Arguments as
    :class:`~lightning_mspipe.models.base.MemoryTGNN`.
    """

    def build_embedding(self) -> nn.Module:
        time_projection = nn.Linear(1, self.hparams.memory_dim)
        nn.init.normal_(time_projection.weight, std=0.1)
        nn.init.zeros_(time_projection.bias)
        return nn.ModuleDict(
            {"time": time_projection, "out": _identity_or_linear(self.hparams.memory_dim, self.hparams.embedding_dim)}
        )

    def build_updater(self) -> MemoryUpdater:
        return RNNUpdater(self.hparams.memory_dim, self.mail_dim, self.hparams.time_dim)

    def embed(self, batch: TemporalBatch, memory: Tensor) -> Tensor:
        roots = batch.memory_index[: batch.neighbors.num_roots]
        delta = batch.root_times() - batch.memory.last_event_time()[roots]
        scale = 1.0 + self.embedding["time"](torch.log1p(delta.clamp(min=0)).to(memory.dtype).unsqueeze(1))
        return self.embedding["out"](memory.index_select(0, roots) * scale)
