"""Peer baseline: PyG's TGN link-prediction model, built from PyG's public API.

This is the model of PyG's ``examples/tgn.py`` (TGNMemory with IdentityMessage and
LastAggregator, a LastNeighborLoader, a one-layer TransformerConv embedding with a
TimeEncoder on relative time, and an MLP link predictor), re-written for a side-by-side
benchmark against lightning-mspipe. Only ``torch-geometric`` itself is needed (no
``torch-scatter``/``torch-sparse``); it runs on CPU.

Protocol, as in the example: memory and the neighbour table are reset at the start of each
training epoch; training visits the training events in chronological batches with one
uniformly random negative destination per positive (drawn from ``[min dst, max dst]``);
after the last epoch, val and then test are scored in order while memory keeps updating.
Unlike the example (which averages AP per batch), AP/AUROC are computed once over all
scored pairs of a split, which is what the lightning-mspipe side reports.

Reproducibility: seeded runs are not bit-exact on CPU. The TimeEncoder takes cos(w * dt) of raw
seconds (dt up to ~1e7), so a 1-ulp difference in a GEMM (MKL/oneDNN paths vary run to run)
changes messages; on UCI, test AP of identical runs spreads by about 0.02. Compare medians over seeds.
Without torch-scatter, PyG 2.8's ``scatter_argmax`` fills empty groups with ``dim_size - 1``, so
LastAggregator may give a node with no pending message another node's message (PyG behaviour, kept).

Run ``python bench/peers/pyg_tgn.py [path/to/ml_uci.csv.gz]`` for a one-epoch smoke run on UCI.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import Linear
from torch.nn.functional import binary_cross_entropy_with_logits
from torch_geometric.nn import TransformerConv
from torch_geometric.nn.models.tgn import (
    IdentityMessage,
    LastAggregator,
    LastNeighborLoader,
    TGNMemory,
    TimeEncoder,
)
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

__all__ = ["GraphAttentionEmbedding", "LinkPredictor", "train_pyg_tgn"]

EVAL_SEED_OFFSET = 12345  # default eval negatives use seed + 12345, as the example's manual_seed(12345)


class GraphAttentionEmbedding(torch.nn.Module):
    """One TransformerConv layer over the last-K temporal neighbours of each node.

    Edge attributes are ``[time_enc(last_update[src] - t_edge), msg]``; the time encoder is
    shared with the memory module, as in PyG's example.

    Args:
        in_channels: Memory dimension (node input features).
        out_channels: Embedding dimension; split over 2 heads, so it must be even.
        msg_dim: Raw edge-message dimension ``D``.
        time_enc: The ``TimeEncoder`` owned by ``TGNMemory``.

    Shapes:
        x: ``[N', M]`` memory of the sampled nodes; last_update: ``[N']``;
        edge_index: ``[2, K']`` local ids; t: ``[K']``; msg: ``[K', D]`` → ``[N', out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, msg_dim: int, time_enc: TimeEncoder) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"GraphAttentionEmbedding: embedding_dim={out_channels} must be even (2 heads).")
        self.time_enc = time_enc
        self.conv = TransformerConv(
            in_channels, out_channels // 2, heads=2, dropout=0.1, edge_dim=msg_dim + time_enc.out_channels
        )

    def forward(self, x: Tensor, last_update: Tensor, edge_index: Tensor, t: Tensor, msg: Tensor) -> Tensor:
        rel_t = (last_update[edge_index[0]] - t).to(x.dtype)
        edge_attr = torch.cat([self.time_enc(rel_t), msg], dim=-1)
        return self.conv(x, edge_index, edge_attr)


class LinkPredictor(torch.nn.Module):
    """Scores a (source, destination) embedding pair: ``lin(relu(lin_s(z_s) + lin_d(z_d)))``.

    Shapes:
        z_src, z_dst: ``[B, H]`` → logits ``[B, 1]``.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.lin_src = Linear(in_channels, in_channels)
        self.lin_dst = Linear(in_channels, in_channels)
        self.lin_final = Linear(in_channels, 1)

    def forward(self, z_src: Tensor, z_dst: Tensor) -> Tensor:
        return self.lin_final((self.lin_src(z_src) + self.lin_dst(z_dst)).relu())


class _PygTGN:
    """Holds memory, neighbour table, embedding and predictor over one reordered event stream.

    ``stream_*`` tensors list the train, val and test events in that order, so the
    neighbour loader's running edge ids (assigned in insertion order) index them directly.
    """

    def __init__(self, stream: dict[str, Tensor], num_nodes: int, memory_dim: int, time_dim: int,
                 embedding_dim: int, num_neighbors: int) -> None:
        self.stream = stream
        msg_dim = stream["msg"].size(-1)
        self.memory = TGNMemory(num_nodes, msg_dim, memory_dim, time_dim,
                                message_module=IdentityMessage(msg_dim, memory_dim, time_dim),
                                aggregator_module=LastAggregator())
        self.gnn = GraphAttentionEmbedding(memory_dim, embedding_dim, msg_dim, self.memory.time_enc)
        self.link_pred = LinkPredictor(embedding_dim)
        self.neighbors = LastNeighborLoader(num_nodes, size=num_neighbors)
        self.assoc = torch.empty(num_nodes, dtype=torch.long)  # global id -> row in the batch's subgraph

    def parameters(self) -> list[torch.nn.Parameter]:
        # The embedding shares time_enc with memory: dedupe so the optimizer sees each once.
        params = {id(p): p for m in (self.memory, self.gnn, self.link_pred) for p in m.parameters()}
        return list(params.values())

    def set_train(self, mode: bool) -> None:
        """Switches train/eval mode; leaving train mode flushes TGNMemory's pending messages."""
        for module in (self.memory, self.gnn, self.link_pred):
            module.train(mode)

    def score(self, lo: int, hi: int, neg_dst: Tensor) -> tuple[Tensor, Tensor]:
        """Logits for stream events ``[lo, hi)`` and their negatives, then absorbs the events.

        Returns:
            ``(pos_logits, neg_logits)``, each ``[B]``.
        """
        src, dst = self.stream["src"][lo:hi], self.stream["dst"][lo:hi]
        n_id = torch.cat([src, dst, neg_dst]).unique()
        n_id, edge_index, e_id = self.neighbors(n_id)
        self.assoc[n_id] = torch.arange(n_id.size(0))
        z, last_update = self.memory(n_id)
        z = self.gnn(z, last_update, edge_index, self.stream["t"][e_id], self.stream["msg"][e_id])
        z_src = z[self.assoc[src]]
        pos = self.link_pred(z_src, z[self.assoc[dst]]).view(-1)
        neg = self.link_pred(z_src, z[self.assoc[neg_dst]]).view(-1)
        self.memory.update_state(src, dst, self.stream["t"][lo:hi], self.stream["msg"][lo:hi])
        self.neighbors.insert(src, dst)
        return pos, neg


def _as_long_time(t: Tensor) -> Tensor:
    """TGNMemory keeps ``last_update`` as int64, so timestamps must be whole numbers."""
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError("train_pyg_tgn: PyG's TGNMemory stores timestamps as int64, but `t` has "
                         "fractional values. Rescale `t` (e.g. to integer milliseconds) before calling.")
    return t.round().long() if t.is_floating_point() else t.long()


def _split_indices(t: Tensor, masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Event indices per split, checked to be disjoint and chronological (train ≤ val ≤ test)."""
    num_events = t.numel()
    for name, mask in masks.items():
        if mask.dtype != torch.bool or mask.shape != (num_events,):
            raise ValueError(f"train_pyg_tgn: `{name}_mask` must be bool of shape [{num_events}], "
                             f"got {mask.dtype} {tuple(mask.shape)}.")
    if (masks["train"].long() + masks["val"].long() + masks["test"].long()).max() > 1:
        raise ValueError("train_pyg_tgn: train/val/test masks overlap; each event may be in one split only.")
    idx = {name: mask.nonzero().view(-1) for name, mask in masks.items()}
    if idx["train"].numel() == 0:
        raise ValueError("train_pyg_tgn: `train_mask` selects no events.")
    for a, b in (("train", "val"), ("val", "test"), ("train", "test")):
        if idx[a].numel() and idx[b].numel() and t[idx[a]].max() > t[idx[b]].min():
            raise ValueError(f"train_pyg_tgn: split is not chronological: latest {a} time "
                             f"{t[idx[a]].max().item()} > earliest {b} time {t[idx[b]].min().item()}.")
    return idx


def _scores_to_metrics(pos: Tensor, neg: Tensor) -> tuple[float, float]:
    preds = torch.cat([pos, neg]).sigmoid()
    target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).long()
    return float(binary_average_precision(preds, target)), float(binary_auroc(preds, target))


def train_pyg_tgn(src: Tensor, dst: Tensor, t: Tensor, edge_feat: Tensor, train_mask: Tensor,
                  val_mask: Tensor, test_mask: Tensor, *, epochs: int = 1, batch_size: int = 600,
                  memory_dim: int = 100, time_dim: int = 100, embedding_dim: int = 100,
                  num_neighbors: int = 10, lr: float = 1e-4, seed: int = 0,
                  eval_negatives: dict[str, Tensor] | None = None,
                  log: Callable[[str], object] = print) -> dict:
    """Trains PyG's TGN on a chronological split and scores val then test (CPU).

    Args:
        src, dst: 0-based node ids of each event.
        t: Event times, sorted; int64, or float64 holding whole numbers.
        edge_feat: Edge features; ``D = 0`` is replaced by one zero column.
        train_mask, val_mask, test_mask: Disjoint chronological split; events in no split are skipped.
        epochs: Training epochs (memory and neighbour table reset at each).
        batch_size: Events per chronological batch, for training and evaluation.
        memory_dim, time_dim, embedding_dim: TGN sizes (``embedding_dim`` even).
        num_neighbors: ``K`` most recent neighbours kept per node.
        lr: Adam learning rate.
        seed: Seeds parameters and dropout (``torch.manual_seed``), training negatives
            (``seed``) and default eval negatives (``seed + 12345``).
        eval_negatives: Optional ``{"val": LongTensor[Ev], "test": LongTensor[Et]}``: the one
            negative destination per positive, in event order, so that systems score the same pairs.
        log: Called with one progress line per epoch and split.

    Returns:
        ``{"epoch_times": [s], "train_losses": [mean BCE per event], "val_ap", "val_auroc",
        "test_ap", "test_auroc"}``; metrics are computed over all pairs of a split.

    Raises:
        ValueError: On bad sizes, overlapping or non-chronological masks, fractional times,
            or eval negatives of the wrong length or with negative ids.

    Shapes:
        src, dst, t, masks: ``[E]``; edge_feat: ``[E, D]``; B = ``batch_size``; K = ``num_neighbors``.
        Memory costs ``O(N * (memory_dim + K))``; PyG's message store is a Python dict per node.
    """
    if epochs < 1 or batch_size < 1 or num_neighbors < 1:
        raise ValueError(f"train_pyg_tgn: epochs, batch_size and num_neighbors must be >= 1, got "
                         f"{epochs}, {batch_size}, {num_neighbors}.")
    num_events = src.numel()
    if dst.shape != (num_events,) or t.shape != (num_events,) or edge_feat.dim() != 2 \
            or edge_feat.size(0) != num_events:
        raise ValueError(f"train_pyg_tgn: expected src, dst, t of shape [E] and edge_feat [E, D] with "
                         f"E={num_events}; got dst {tuple(dst.shape)}, t {tuple(t.shape)}, "
                         f"edge_feat {tuple(edge_feat.shape)}.")
    torch.manual_seed(seed)
    src, dst, t = src.long(), dst.long(), _as_long_time(t)
    msg = edge_feat.float() if edge_feat.size(1) > 0 else torch.zeros(num_events, 1)
    idx = _split_indices(t, {"train": train_mask, "val": val_mask, "test": test_mask})
    order = torch.cat([idx["train"], idx["val"], idx["test"]])
    stream = {"src": src[order], "dst": dst[order], "t": t[order], "msg": msg[order]}
    min_dst, max_dst = int(dst.min()), int(dst.max())
    n_train, n_val, n_test = (idx[k].numel() for k in ("train", "val", "test"))
    if eval_negatives is None:
        gen = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
        eval_negatives = {k: torch.randint(min_dst, max_dst + 1, (n,), generator=gen)
                          for k, n in (("val", n_val), ("test", n_test))}
    for name, n in (("val", n_val), ("test", n_test)):
        neg = eval_negatives.get(name)
        if neg is None or neg.shape != (n,) or neg.is_floating_point() or (n and neg.min() < 0):
            got = None if neg is None else f"{neg.dtype} {tuple(neg.shape)}"
            raise ValueError(f"train_pyg_tgn: eval_negatives['{name}'] must be a LongTensor[{n}] of "
                             f"non-negative node ids, one per {name} event in time order; got {got}.")
    # Negative ids beyond the events' nodes are allowed (they keep zero memory): size the tables for them.
    all_ids = torch.cat([src, dst, eval_negatives["val"].long(), eval_negatives["test"].long()])
    num_nodes = int(all_ids.max()) + 1

    model = _PygTGN(stream, num_nodes, memory_dim, time_dim, embedding_dim, num_neighbors)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_gen = torch.Generator().manual_seed(seed)
    epoch_times: list[float] = []
    train_losses: list[float] = []
    for epoch in range(1, epochs + 1):
        model.set_train(True)
        model.memory.reset_state()
        model.neighbors.reset_state()
        total_loss = torch.zeros(())
        start = time.perf_counter()
        for lo in range(0, n_train, batch_size):
            hi = min(lo + batch_size, n_train)
            optimizer.zero_grad()
            neg_dst = torch.randint(min_dst, max_dst + 1, (hi - lo,), generator=train_gen)
            pos, neg = model.score(lo, hi, neg_dst)
            loss = binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) \
                + binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
            loss.backward()
            optimizer.step()
            model.memory.detach()
            total_loss += loss.detach() * (hi - lo)
        epoch_times.append(time.perf_counter() - start)
        train_losses.append(float(total_loss) / n_train)
        log(f"pyg_tgn epoch {epoch}: loss {train_losses[-1]:.4f}, {epoch_times[-1]:.2f} s")

    result: dict = {"epoch_times": epoch_times, "train_losses": train_losses}
    model.set_train(False)  # flushes pending training messages into memory
    offset = n_train
    with torch.no_grad():
        for name, n in (("val", n_val), ("test", n_test)):
            pos_all, neg_all = [], []
            for lo in range(0, n, batch_size):
                hi = min(lo + batch_size, n)
                pos, neg = model.score(offset + lo, offset + hi, eval_negatives[name][lo:hi].long())
                pos_all.append(pos)
                neg_all.append(neg)
            offset += n
            if n:
                ap, auroc = _scores_to_metrics(torch.cat(pos_all), torch.cat(neg_all))
            else:
                ap = auroc = float("nan")
            result[f"{name}_ap"], result[f"{name}_auroc"] = ap, auroc
            log(f"pyg_tgn {name}: AP {ap:.4f}, AUROC {auroc:.4f} ({n} events)")
    return result


def _smoke(path: str | None = None) -> dict:
    """One epoch on UCI-Msg with a 70/15/15 time-quantile split; prints versions and results."""
    import platform
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import torch_geometric

    root = Path(__file__).resolve().parents[2]  # project root; data lives in ../shared/datasets
    csv = Path(path) if path else root.parent / "shared/datasets/uci/ml_uci.csv.gz"
    df = pd.read_csv(csv, index_col=0)
    ts = df["ts"].to_numpy()
    val_time, test_time = np.quantile(ts, [0.70, 0.85])
    t = torch.tensor(ts, dtype=torch.long)
    src, dst = (torch.tensor(df[c].to_numpy() - 1, dtype=torch.long) for c in ("u", "i"))  # 1-based ids
    print(f"device cpu ({platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"torch_geometric {torch_geometric.__version__}; {csv.name}: {len(df)} events")
    train, val, test = t <= val_time, (t > val_time) & (t <= test_time), t > test_time
    result = train_pyg_tgn(src, dst, t, torch.zeros(len(df), 0), train, val, test, epochs=1)
    print(result)
    return result


if __name__ == "__main__":
    import sys

    _smoke(sys.argv[1] if len(sys.argv) > 1 else None)
