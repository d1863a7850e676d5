"""Building blocks: time encoding, masked attention over a fixed number of slots, link predictor."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LinkPredictor", "SlotAttention", "TemporalAttention", "TimeEncoder"]


class TimeEncoder(nn.Module):
    """``cos(Δt · w + b)`` with ``w`` initialised to ``10^{-9 i / (D-1)}`` (the TGN/TGAT encoding).

    Shapes:
        - input: ``[*]`` time differences (any float dtype); output: ``[*, D]`` float32
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(1, dim)
        with torch.no_grad():
            self.linear.weight.copy_((1.0 / 10 ** torch.linspace(0, 9, dim)).unsqueeze(1))
            self.linear.bias.zero_()

    def forward(self, delta: Tensor) -> Tensor:
        return torch.cos(self.linear(delta.to(self.linear.weight.dtype).unsqueeze(-1)))


class SlotAttention(nn.Module):
    """Multi-head attention of one query per row over ``S`` masked key/value slots.

    Rows whose slots are all masked get a zero attention output.

    Shapes:
        - query: ``[R, D_q]``; slots: ``[R, S, D_kv]``; mask: ``[R, S]`` bool (True = real slot)
        - output: ``[R, D_out]``
    """

    def __init__(self, query_dim: int, slot_dim: int, out_dim: int, heads: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        if out_dim % heads:
            raise ValueError(f"SlotAttention: out_dim {out_dim} is not divisible by heads {heads}.")
        self.heads = heads
        self.head_dim = out_dim // heads
        self.q = nn.Linear(query_dim, out_dim)
        self.k = nn.Linear(slot_dim, out_dim)
        self.v = nn.Linear(slot_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, slots: Tensor, mask: Tensor) -> Tensor:
        rows, num_slots = mask.shape
        q = self.q(query).view(rows, 1, self.heads, self.head_dim)
        k = self.k(slots).view(rows, num_slots, self.heads, self.head_dim)
        v = self.v(slots).view(rows, num_slots, self.heads, self.head_dim)
        score = (q * k).sum(-1) / math.sqrt(self.head_dim)  # [R, S, H]
        real = mask.unsqueeze(-1)
        score = score.masked_fill(~real, torch.finfo(score.dtype).min)
        weight = torch.softmax(score, dim=1) * real  # rows with no real slot get all-zero weights
        weight = self.dropout(weight)
        return (weight.unsqueeze(-1) * v).sum(1).reshape(rows, -1)


class TemporalAttention(nn.Module):
    """One layer of temporal graph attention (TGAT/TGN) over ``K`` sampled neighbours.

    The query is the root's state with the encoding of Δt = 0; keys and values are the
    neighbours' states, the features of the connecting events and the encoding of the time
    since each interaction. The output mixes the attention result with the root's state.

    Shapes:
        - root: ``[R, D]``; nbr: ``[R, K, D]``; nbr_edge: ``[R, K, D_e]`` or ``None``
        - delta: ``[R, K]`` root time minus interaction time; mask: ``[R, K]`` bool
        - output: ``[R, D_out]``
    """

    def __init__(
        self, dim: int, edge_dim: int, time_dim: int, out_dim: int, heads: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.time_encoder = TimeEncoder(time_dim)
        self.edge_dim = edge_dim
        self.attention = SlotAttention(dim + time_dim, dim + edge_dim + time_dim, out_dim, heads, dropout)
        self.merge = nn.Linear(out_dim + dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, root: Tensor, nbr: Tensor, nbr_edge: Tensor | None, delta: Tensor, mask: Tensor) -> Tensor:
        zero_time = self.time_encoder(torch.zeros(root.shape[0], device=root.device))
        parts = [nbr, self.time_encoder(delta)]
        if self.edge_dim:
            assert nbr_edge is not None, "TemporalAttention: the model has edge features but the batch has none"
            parts.insert(1, nbr_edge.to(nbr.dtype))
        attended = self.attention(torch.cat([root, zero_time], dim=1), torch.cat(parts, dim=2), mask)
        out = self.merge(torch.cat([self.dropout(torch.relu(attended)), root], dim=1))
        return self.norm(out)


class LinkPredictor(nn.Module):
    """Scores a (source, destination) embedding pair: ``w · relu(W_s h_s + W_d h_d) + b``.

    Shapes:
        - src: ``[P, D]``; dst: ``[P, D]``; output: ``[P]`` logits
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.src = nn.Linear(dim, dim)
        self.dst = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 1)

    def forward(self, src: Tensor, dst: Tensor) -> Tensor:
        return self.out(torch.relu(self.src(src) + self.dst(dst))).squeeze(-1)
