"""One memory on every rank: merging the memory writes of several ranks into the write of one process.

With several ranks, each trains a contiguous slice of every global batch (rank 0 the first
events, rank ``W − 1`` the last) and makes the write of its slice. :func:`merge_writes` turns the
``W`` writes into the write one process would have made for the whole global batch, so every
rank applies the same write and holds the same memory after every version:

- memory rows: a node written by several ranks keeps the write of the highest rank (its last
  event in the batch: "last event wins", as on one process);
- mails: a node's own mail (from its own event) wins over a mail delivered to it as a temporal
  neighbour (APAN), as :meth:`~lightning_mspipe.models.network.MemoryNetwork.mail_receivers`
  orders them on one process; among mails of the same kind the highest rank wins.

A :class:`MemoryWriteExchange` is what a strategy offers to the model for writes made outside
the training pipeline (validation, test): it maps this rank's write to the merged one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from lightning_mspipe.memory.store import MemoryWrite, last_occurrence

__all__ = ["MemoryWriteExchange", "merge_writes", "own_mail_mask"]


@runtime_checkable
class MemoryWriteExchange(Protocol):
    """Maps this rank's memory write to the write of all ranks merged (a collective: every rank calls it)."""

    def exchange_memory_write(self, write: MemoryWrite) -> MemoryWrite:
        """The merged write of every rank's slice of the same global batch."""


def own_mail_mask(write: MemoryWrite) -> Tensor:
    """Which of the write's mails come from the receiver's own event: ``[V]`` bool (all, when ``own_mail`` is None)."""
    if write.own_mail is not None:
        return write.own_mail.bool()
    return torch.ones(write.mail_nodes.numel(), dtype=torch.bool, device=write.mail_nodes.device)


def merge_writes(writes: list[MemoryWrite]) -> MemoryWrite:
    """The write of one process for the global batch, from the writes of its ``W`` slices in rank order.

    Args:
        writes: One write per rank, rank 0 first; each as
            :meth:`~lightning_mspipe.models.network.MemoryNetwork.memory_write` makes it.

    Returns:
        One write with unique ``nodes`` and ``mail_nodes`` (see the module docstring for who wins).

    Shapes:
        - writes[r]: ``W_r`` nodes and ``V_r`` mails; returned: ``≤ Σ W_r`` nodes, ``≤ Σ V_r`` mails
    """
    if not writes:
        raise ValueError("merge_writes: no writes to merge.")
    if len(writes) == 1:
        return writes[0]
    nodes = torch.cat([w.nodes for w in writes])
    written, last = last_occurrence(nodes)  # concatenated in rank order: the highest rank wins
    own = torch.cat([own_mail_mask(w) for w in writes])
    order = torch.cat([(~own).nonzero().squeeze(1), own.nonzero().squeeze(1)])  # delivered mails first, own last
    mail_nodes = torch.cat([w.mail_nodes for w in writes])[order]
    receivers, last_mail = last_occurrence(mail_nodes)
    pick = order[last_mail]
    return MemoryWrite(
        nodes=written,
        memory=torch.cat([w.memory for w in writes])[last],
        last_update=torch.cat([w.last_update for w in writes])[last],
        mail_nodes=receivers,
        mail=torch.cat([w.mail for w in writes])[pick],
        mail_ts=torch.cat([w.mail_ts for w in writes])[pick],
        own_mail=own[pick],
    )
