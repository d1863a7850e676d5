"""Building blocks: time encoding, masked attention over a fixed number of slots, link predictor."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LinkPredictor", "NeighborProjection", "SlotAttention", "TemporalAttention", "TimeEncoder", "masked_attention"]


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


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: nn.Module) -> Tensor:
    """Scaled dot-product attention of one query per row over ``S`` masked slots, per head.

    Rows whose slots are all masked get a zero output.

    Shapes:
        - q: ``[R, H, d]``; k, v: ``[R, S, H, d]``; mask: ``[R, S]`` bool (True = real slot)
        - output: ``[R, H · d]``
    """
    score = (q.unsqueeze(1) * k).sum(-1) / math.sqrt(q.shape[-1])  # [R, S, H]
    real = mask.unsqueeze(-1)
    score = score.masked_fill(~real, torch.finfo(score.dtype).min)
    weight = dropout(torch.softmax(score, dim=1) * real)  # rows with no real slot get all-zero weights
    return (weight.unsqueeze(-1) * v).sum(1).reshape(q.shape[0], -1)


class SlotAttention(nn.Module):
    """Multi-head attention of one query per row over ``S`` masked key/value slots.

    Shapes:
        - query: ``[R, D_q]``; slots: ``[R, S, D_kv]``; mask: ``[R, S]`` bool (True = real slot)
        - output: ``[R, D_out]``
    """

    def __init__(self, query_dim: int, slot_dim: int, out_dim: int, heads: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        _check_heads(out_dim, heads)
        self.heads = heads
        self.q = nn.Linear(query_dim, out_dim)
        self.k = nn.Linear(slot_dim, out_dim)
        self.v = nn.Linear(slot_dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, slots: Tensor, mask: Tensor) -> Tensor:
        rows, num_slots = mask.shape
        q = self.q(query).view(rows, self.heads, -1)
        k = self.k(slots).view(rows, num_slots, self.heads, -1)
        v = self.v(slots).view(rows, num_slots, self.heads, -1)
        return masked_attention(q, k, v, mask, self.dropout)


def _check_heads(out_dim: int, heads: int) -> None:
    if heads < 1 or out_dim % heads:
        raise ValueError(f"attention: out_dim {out_dim} is not divisible by heads {heads}.")


class NeighborProjection(nn.Module):
    """``W · [s_u ‖ e ‖ φ(Δt)] + b`` for every neighbour slot, with the node part projected once per node.

    The node states ``s_u`` repeat across slots (``U`` unique nodes for ``R · K`` slots), so the
    node part is projected on ``[U, D]`` and gathered, which halves the cost of the key and value
    projections against projecting the concatenation per slot (the same function).

    Shapes:
        - memory: ``[U, D]``; rows: ``[R, K]`` into ``U``; edge: ``[R, K, D_e]`` or ``None``;
          time: ``[R, K, D_t]``; output: ``[R, K, D_out]``
    """

    def __init__(self, dim: int, edge_dim: int, time_dim: int, out_dim: int) -> None:
        super().__init__()
        self.node = nn.Linear(dim, out_dim)
        self.edge = nn.Linear(edge_dim, out_dim, bias=False) if edge_dim else None
        self.time = nn.Linear(time_dim, out_dim, bias=False)

    def forward(self, memory: Tensor, rows: Tensor, edge: Tensor | None, time: Tensor) -> Tensor:
        # index_select (not advanced indexing): its backward is a deterministic index_add on CPU
        out = self.node(memory).index_select(0, rows.reshape(-1)).view(*rows.shape, -1) + self.time(time)
        if self.edge is not None:
            assert edge is not None, "TemporalAttention: the model has edge features but the batch has none"
            out = out + self.edge(edge.to(out.dtype))
        return out


class TemporalAttention(nn.Module):
    """One layer of temporal graph attention (TGAT/TGN) over ``K`` sampled neighbours.

    The query is the root's state (with the constant encoding of Δt = 0 folded into its bias);
    keys and values project the neighbours' states, the features of the connecting events and
    the encoding of the time since each interaction. The output mixes the attention result
    with the root's state.

    Shapes:
        - root: ``[R, D]``; memory: ``[U, D]``; nbr_rows: ``[R, K]`` rows of ``memory``
        - nbr_edge: ``[R, K, D_e]`` or ``None``; delta: ``[R, K]`` root time minus interaction time
        - mask: ``[R, K]`` bool; output: ``[R, D_out]``
    """

    def __init__(
        self, dim: int, edge_dim: int, time_dim: int, out_dim: int, heads: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        _check_heads(out_dim, heads)
        self.heads = heads
        self.time_encoder = TimeEncoder(time_dim)
        self.query = nn.Linear(dim, out_dim)
        self.key = NeighborProjection(dim, edge_dim, time_dim, out_dim)
        self.value = NeighborProjection(dim, edge_dim, time_dim, out_dim)
        self.merge = nn.Linear(out_dim + dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, root: Tensor, memory: Tensor, nbr_rows: Tensor, nbr_edge: Tensor | None, delta: Tensor, mask: Tensor
    ) -> Tensor:
        rows, k = nbr_rows.shape
        time = self.time_encoder(delta)
        q = self.query(root).view(rows, self.heads, -1)
        keys = self.key(memory, nbr_rows, nbr_edge, time).view(rows, k, self.heads, -1)
        values = self.value(memory, nbr_rows, nbr_edge, time).view(rows, k, self.heads, -1)
        attended = masked_attention(q, keys, values, mask, self.dropout)
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
