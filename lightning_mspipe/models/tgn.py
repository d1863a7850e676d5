"""TGN: GRU memory updater and one layer of temporal graph attention (Rossi et al., 2020)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.updaters import GRUUpdater, MemoryUpdater
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.layers import TemporalAttention

__all__ = ["TGN"]


class TGN(MemoryTGNN):
    """Temporal Graph Network: GRU updater; embeddings from temporal attention (``heads`` heads)
    over the ``K`` most recent neighbours: their updated memory, the connecting events' features
    and the time since each interaction. Arguments as :class:`~lightning_mspipe.models.base.MemoryTGNN`.
    """

    def build_updater(self) -> MemoryUpdater:
        return GRUUpdater(self.hparams.memory_dim, self.mail_dim, self.hparams.time_dim)

    def build_embedding(self) -> nn.Module:
        hp = self.hparams
        return TemporalAttention(hp.memory_dim, hp.edge_dim, hp.time_dim, hp.embedding_dim, hp.heads, hp.dropout)

    def embed(self, batch: TemporalBatch, memory: Tensor) -> Tensor:
        nbrs = batch.neighbors
        delta = batch.root_times().unsqueeze(1) - nbrs.times
        return self.embedding(
            self.root_memory(batch, memory), memory, self.neighbor_rows(batch), batch.nbr_edge_feat, delta, nbrs.mask
        )
