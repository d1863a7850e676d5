"""JODIE: RNN memory updater and a time-projection embedding (Kumar et al., 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.updaters import MemoryUpdater, RNNUpdater
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.models.network import MemoryNetwork, identity_or_linear

__all__ = ["JODIE", "JODIENetwork"]


class JODIENetwork(MemoryNetwork):
    """JODIE's network: RNN updater; a root's embedding is its memory projected forward in time,
    ``h = s ⊙ (1 + w · log1p(Δt))``, with Δt the time since the node's last event. Arguments as
    :class:`~lightning_mspipe.models.network.MemoryNetwork`.
    """

    def build_embedding(self) -> nn.Module:
        time_projection = nn.Linear(1, self.memory_dim)
        nn.init.normal_(time_projection.weight, std=0.1)
        nn.init.zeros_(time_projection.bias)
        return nn.ModuleDict(
            {"time": time_projection, "out": identity_or_linear(self.memory_dim, self.embedding_dim)}
        )

    def build_updater(self) -> MemoryUpdater:
        return RNNUpdater(self.memory_dim, self.mail_dim, self.time_dim)

    def embed(self, batch: TemporalBatch, memory: Tensor) -> Tensor:
        roots = batch.memory_index[: batch.neighbors.num_roots]
        delta = batch.root_times() - batch.memory.last_event_time()[roots]
        scale = 1.0 + self.embedding["time"](torch.log1p(delta.clamp(min=0)).to(memory.dtype).unsqueeze(1))
        return self.embedding["out"](memory.index_select(0, roots) * scale)


class JODIE(MemoryTGNN):
    """JODIE (Kumar et al., 2019) as a LightningModule over :class:`JODIENetwork`. Arguments as
    :class:`~lightning_mspipe.models.base.MemoryTGNN`.
    """

    network_class = JODIENetwork
