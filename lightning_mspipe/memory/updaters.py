"""Memory updaters: GRU (TGN), RNN (JODIE) and attention over the mailbox (APAN).

Every updater maps a :class:`~lightning_mspipe.memory.store.MemorySnapshot` to the nodes' new
memory. A node's pending mails are those in its mailbox (``mail_mask``); a node without mail
keeps its memory. The input of a mail is ``[mail ‖ time_enc(mail_ts − last_update)]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_mspipe.memory.store import MemorySnapshot
from lightning_mspipe.models.layers import SlotAttention, TimeEncoder

__all__ = ["AttentionUpdater", "GRUUpdater", "MemoryUpdater", "RNNUpdater"]


class MemoryUpdater(nn.Module):
    """Base class: encodes mails with their age and applies :meth:`update` to nodes with mail.

    Args:
        memory_dim: ``D``.
        mail_dim: ``D_mail``.
        time_dim: Width of the time encoding of each mail.
    """

    def __init__(self, memory_dim: int, mail_dim: int, time_dim: int) -> None:
        super().__init__()
        self.memory_dim, self.mail_dim = memory_dim, mail_dim
        self.time_encoder = TimeEncoder(time_dim)
        self.input_dim = mail_dim + time_dim

    def mail_input(self, snapshot: MemorySnapshot) -> Tensor:
        """Mails with the encoding of their age relative to the memory: ``[U, M, D_mail + D_t]``."""
        age = snapshot.mail_ts - snapshot.last_update.unsqueeze(1)
        return torch.cat([snapshot.mailbox, self.time_encoder(age)], dim=2)

    def forward(self, snapshot: MemorySnapshot) -> Tensor:
        """New memory ``[U, D]`` of the snapshot's nodes."""
        has_mail = snapshot.mail_mask.any(dim=1, keepdim=True)
        updated = self.update(snapshot.memory, self.mail_input(snapshot), snapshot.mail_mask, snapshot.mail_ts)
        return torch.where(has_mail, updated, snapshot.memory.to(updated.dtype))

    def update(self, memory: Tensor, mail: Tensor, mask: Tensor, mail_ts: Tensor) -> Tensor:
        """Shapes: memory ``[U, D]``, mail ``[U, M, D_in]``, mask and mail_ts ``[U, M]`` → ``[U, D]``."""
        raise NotImplementedError


class _RecurrentUpdater(MemoryUpdater):
    """Applies a recurrent cell to each node's newest mail (``s' = cell(mail, s)``)."""

    cell: nn.Module

    def update(self, memory: Tensor, mail: Tensor, mask: Tensor, mail_ts: Tensor) -> Tensor:
        if mail.shape[1] == 1:
            newest = mail[:, 0]
        else:
            slot = mail_ts.masked_fill(~mask, float("-inf")).argmax(dim=1)
            newest = mail[torch.arange(mail.shape[0], device=mail.device), slot]
        return self.cell(newest, memory)


class GRUUpdater(_RecurrentUpdater):
    """TGN's updater: ``s' = GRU(mail, s)`` on the newest mail."""

    def __init__(self, memory_dim: int, mail_dim: int, time_dim: int) -> None:
        super().__init__(memory_dim, mail_dim, time_dim)
        self.cell = nn.GRUCell(self.input_dim, memory_dim)


class RNNUpdater(_RecurrentUpdater):
    """JODIE's updater: ``s' = tanh(W mail + U s)`` on the newest mail."""

    def __init__(self, memory_dim: int, mail_dim: int, time_dim: int) -> None:
        super().__init__(memory_dim, mail_dim, time_dim)
        self.cell = nn.RNNCell(self.input_dim, memory_dim)


class AttentionUpdater(MemoryUpdater):
    """APAN's updater: the memory attends over all mails in the mailbox.

    ``s' = LayerNorm(s + W · relu(Attention(q = s, kv = mails)))``.
    """

    def __init__(self, memory_dim: int, mail_dim: int, time_dim: int, heads: int = 2, dropout: float = 0.1) -> None:
        super().__init__(memory_dim, mail_dim, time_dim)
        self.attention = SlotAttention(memory_dim, self.input_dim, memory_dim, heads, dropout)
        self.out = nn.Linear(memory_dim, memory_dim)
        self.norm = nn.LayerNorm(memory_dim)

    def update(self, memory: Tensor, mail: Tensor, mask: Tensor, mail_ts: Tensor) -> Tensor:
        return self.norm(memory + self.out(torch.relu(self.attention(memory, mail, mask))))
