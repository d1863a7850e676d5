"""TGN: GRU memory updater and one layer of temporal graph attention (Rossi et al., 2020)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.updaters import GRUUpdater, MemoryUpdater
from lightning_mspipe.layers import TemporalAttention
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.models.network import MemoryNetwork

__all__ = ["TGN", "TGNNetwork"]


class TGNNetwork(MemoryNetwork):
    """TGN's network: GRU updater; embeddings from temporal attention (``heads`` heads) over the
    ``K`` most recent neighbours: their updated memory, the connecting events' features and the
    time since each interaction. Arguments as :class:`~lightning_mspipe.models.network.MemoryNetwork`.
    """

    def build_updater(self) -> MemoryUpdater:
        return GRUUpdater(self.memory_dim, self.mail_dim, self.time_dim)

    def build_embedding(self) -> nn.Module:
        return TemporalAttention(self.memory_dim, self.edge_dim, self.time_dim, self.embedding_dim, self.heads, self.dropout)

    def embed(self, batch: TemporalBatch, memory: Tensor) -> Tensor:
        nbrs = batch.neighbors
        delta = batch.root_times().unsqueeze(1) - nbrs.times
        return self.embedding(
            self.root_memory(batch, memory), memory, self.neighbor_rows(batch), batch.nbr_edge_feat, delta, nbrs.mask
        )


class TGN(MemoryTGNN):
    """Temporal Graph Network (Rossi et al., 2020) as a LightningModule over :class:`TGNNetwork`.
    Arguments as :class:`~lightning_mspipe.models.base.MemoryTGNN`.
    """

    network_class = TGNNetwork
