"""TemporalDataModule: chronological splits, the inductive protocol and batch iterables."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_mspipe.data.events import EventStream
from lightning_mspipe.data.formats import load_events
from lightning_mspipe.data.graph import TemporalGraph
from lightning_mspipe.data.loader import NEIGHBOR_VISIBILITY, TemporalBatchLoader
from lightning_mspipe.data.negatives import DestinationSampler, batch_generator, fixed_negatives
from lightning_mspipe.data.registry import load_dataset
from lightning_mspipe.data.synthetic import synthetic_events
from lightning_mspipe.data.tgb import TGBLinkData, is_tgb_name, load_tgb, tgb_reciprocal_rank_sum

__all__ = ["TemporalDataModule", "TemporalSplit", "chronological_split"]

log = logging.getLogger(__name__)

_SAMPLING = ("recent", "uniform")
_TRAIN_NEGATIVES = ("all", "train_dst")
_EVAL_NEGATIVES = ("all", "dst")


@dataclass
class TemporalSplit:
    """Event indices of the chronological splits and the inductive masks.

    Shapes:
        - train, val, test: ``[E_s]`` int64 event indices, increasing
        - val_new_node, test_new_node: ``[E_s]`` bool, the event touches a node unseen in training
        - new_nodes: ``[M]`` int64, the nodes held out of training
    """

    train: Tensor
    val: Tensor
    test: Tensor
    val_new_node: Tensor
    test_new_node: Tensor
    new_nodes: Tensor


def chronological_split(
    events: EventStream, val_ratio: float, test_ratio: float, new_node_ratio: float, seed: int
) -> TemporalSplit:
    """Split events by time and hold out nodes for inductive evaluation (the TGN protocol).

    Validation starts at the ``1 − val_ratio − test_ratio`` quantile of the event times and test
    at the ``1 − test_ratio`` quantile (events at a boundary time go to the earlier split). A
    seeded ``new_node_ratio`` share of the nodes that occur in validation or test is held out:
    their training events are removed. An evaluation event is "new node" when one of its
    endpoints never occurs in the remaining training events.
    """
    t = events.t
    cut = torch.tensor([1.0 - val_ratio - test_ratio, 1.0 - test_ratio], dtype=torch.float64)
    val_time, test_time = torch.quantile(t, cut).tolist()
    in_train_period = t <= val_time
    in_val = (t > val_time) & (t <= test_time)
    in_test = t > test_time

    eval_nodes = torch.cat([events.src[~in_train_period], events.dst[~in_train_period]]).unique()
    num_new = int(new_node_ratio * eval_nodes.numel())
    generator = batch_generator(seed, 0x1DC7)
    new_nodes = eval_nodes[torch.randperm(eval_nodes.numel(), generator=generator)[:num_new]].sort().values
    held_out = torch.zeros(events.num_nodes, dtype=torch.bool)
    held_out[new_nodes] = True
    touches_held_out = held_out[events.src] | held_out[events.dst]
    train_mask = in_train_period & ~touches_held_out

    seen = torch.zeros(events.num_nodes, dtype=torch.bool)
    seen[events.src[train_mask]] = True
    seen[events.dst[train_mask]] = True
    unseen_endpoint = ~seen[events.src] | ~seen[events.dst]
    return TemporalSplit(
        train=train_mask.nonzero().squeeze(1),
        val=in_val.nonzero().squeeze(1),
        test=in_test.nonzero().squeeze(1),
        val_new_node=unseen_endpoint[in_val],
        test_new_node=unseen_endpoint[in_test],
        new_nodes=new_nodes,
    )


class TemporalDataModule(L.LightningDataModule):
    """Chronological training, validation and test batches of an event stream.

    The events are loaded on construction, so ``num_nodes`` and ``edge_dim`` are known at once
    (LightningCLI links them into the model). They come from one of ``events``, ``path`` or
    ``name``; with none of them, the data is the built-in seeded synthetic stream.

    Args:
        events: An event stream.
        path: A file to read with :func:`~lightning_mspipe.data.load_events` instead.
        name: A registered public data set to read with
            :func:`~lightning_mspipe.data.load_dataset` instead (``"wikipedia"``, ``"uci"``, ...),
            downloaded into the cache on first use (``mspipe fit --data.name wikipedia``); or a
            TGB link-prediction set (``"tgbl-wiki"``, ``"tgbl-review"``, ...) read with TGB's
            package (:func:`~lightning_mspipe.data.tgb.load_tgb`, ``pip install
            'lightning-mspipe[tgb]'``): TGB's events, split, evaluation negatives for validation
            and test (MRR on both) and evaluator, so test MRR is comparable with TGB's leaderboard.
        format: Reader format for ``path`` (``"auto"`` picks from the file).
        batch_size: Events per batch (global batch with several ranks).
        val_ratio, test_ratio: Shares of the time span's events for validation and test.
        new_node_ratio: Share of evaluation nodes held out of training (inductive protocol);
            default 0.1, and 0 for a TGB set (TGB holds no nodes out).
        num_neighbors: Temporal neighbours sampled per root.
        sampling: ``"recent"`` (most recent neighbours) or ``"uniform"``.
        neighbor_visibility: ``"time"`` (default: a root sees every event strictly earlier
            than its time, earlier events of its batch included, as TGN, TGL and DyGLib) or
            ``"batch"`` (the whole batch is hidden, as PyG's ``LastNeighborLoader``).
        train_negatives: ``"all"`` (uniform over all nodes) or ``"train_dst"`` (over the
            destinations seen in training).
        eval_negatives: ``"all"`` (uniform over all nodes) or ``"dst"`` (over the nodes that are
            ever a destination, as DyGLib and TGB draw them; on a bipartite stream this keeps
            sources out of the negatives).
        mrr_negatives: Fixed negatives per test event for one-vs-many MRR (column 0 also serves AP);
            a TGB set has its own (``eval_negatives``, ``mrr_negatives`` and ``val_mrr`` do not apply).
        val_mrr: Give validation events ``mrr_negatives`` negatives too (slower); otherwise one.
        seed: Seed of the split, the negatives and the synthetic data.
        synthetic_nodes, synthetic_events, synthetic_edge_dim: Size and edge-feature width of
            the built-in synthetic stream (:func:`~lightning_mspipe.data.synthetic_events`).
        read_options: Extra keyword arguments for the reader (with ``name``, also ``cache_dir``,
            ``url`` and ``sha256`` of :func:`~lightning_mspipe.data.load_dataset`).

    Raises:
        ValueError: on more than one of ``events``, ``path`` and ``name``, a ``format`` with
            ``name``, ratios out of range, empty splits, a batch larger than a split, unknown
            sampling or negative modes, a TGB set with other ratios than TGB's split.
        ModuleNotFoundError: a TGB set without TGB's package (the message says how to install it).
    """

    def __init__(
        self,
        events: EventStream | None = None,
        path: str | None = None,
        name: str | None = None,
        format: str = "auto",
        batch_size: int = 200,
        val_ratio: float = 0.15,
        test_ratio: float = 0.15,
        new_node_ratio: float | None = None,
        num_neighbors: int = 10,
        sampling: str = "recent",
        neighbor_visibility: str = "time",
        train_negatives: str = "all",
        eval_negatives: str = "all",
        mrr_negatives: int = 20,
        val_mrr: bool = False,
        seed: int = 0,
        synthetic_nodes: int = 1000,
        synthetic_events: int = 30_000,
        synthetic_edge_dim: int = 8,
        read_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["events"])
        if batch_size < 1:
            raise ValueError(f"TemporalDataModule: batch_size must be ≥ 1, got {batch_size}.")
        if not (0.0 < val_ratio < 1.0 and 0.0 < test_ratio < 1.0 and val_ratio + test_ratio < 1.0):
            raise ValueError(
                "TemporalDataModule: need 0 < val_ratio, test_ratio and val_ratio + test_ratio < 1, "
                f"got val_ratio={val_ratio}, test_ratio={test_ratio}."
            )
        if new_node_ratio is not None and not 0.0 <= new_node_ratio < 1.0:
            raise ValueError(f"TemporalDataModule: new_node_ratio must be in [0, 1), got {new_node_ratio}.")
        if num_neighbors < 1:
            raise ValueError(f"TemporalDataModule: num_neighbors must be ≥ 1, got {num_neighbors}.")
        if sampling not in _SAMPLING:
            raise ValueError(f"TemporalDataModule: unknown sampling {sampling!r}; choose one of {_SAMPLING}.")
        if neighbor_visibility not in NEIGHBOR_VISIBILITY:
            raise ValueError(
                f"TemporalDataModule: unknown neighbor_visibility {neighbor_visibility!r}; "
                f"choose one of {NEIGHBOR_VISIBILITY}."
            )
        if train_negatives not in _TRAIN_NEGATIVES:
            raise ValueError(
                f"TemporalDataModule: unknown train_negatives {train_negatives!r}; choose one of {_TRAIN_NEGATIVES}."
            )
        if eval_negatives not in _EVAL_NEGATIVES:
            raise ValueError(
                f"TemporalDataModule: unknown eval_negatives {eval_negatives!r}; choose one of {_EVAL_NEGATIVES}."
            )
        if mrr_negatives < 1:
            raise ValueError(f"TemporalDataModule: mrr_negatives must be ≥ 1, got {mrr_negatives}.")
        self.tgb: TGBLinkData | None = None  # set by _load for a TGB set
        self.events = self._load(events, path, name, format, read_options or {})
        if self.tgb is not None:
            self._check_tgb_protocol(val_ratio, test_ratio, new_node_ratio)
        held_out = (0.0 if self.tgb is not None else 0.1) if new_node_ratio is None else new_node_ratio
        self.split = chronological_split(self.events, val_ratio, test_ratio, held_out, seed)
        if self.tgb is not None:  # the same quantile rule as TGB's: its masks, with no nodes held out
            theirs = (self.tgb.train_mask, self.tgb.val_mask, self.tgb.test_mask)
            ours = (self.split.train, self.split.val, self.split.test)
            assert all(torch.equal(e, m.nonzero().squeeze(1)) for e, m in zip(ours, theirs)), "TGB's split differs"
        self._check_split_sizes()
        self.train_graph = TemporalGraph(self.events, eids=self.split.train)
        self.full_graph = TemporalGraph(self.events)
        log.info("TemporalDataModule: %s; split %s", self.events, self.split_sizes())

    # ------------------------------------------------------------------ sizes
    @property
    def num_nodes(self) -> int:
        """Number of nodes ``N`` of the stream."""
        return int(self.events.num_nodes)

    @property
    def edge_dim(self) -> int:
        """Width of the edge features (0 when there are none)."""
        return self.events.edge_dim

    @property
    def node_dim(self) -> int:
        """Width of the node features (0 when there are none)."""
        return self.events.node_dim

    @property
    def mrr_function(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """How this data's MRR is ranked: TGB's evaluator for a TGB set (``(pos, neg) → sum of
        reciprocal ranks``, see :class:`~lightning_mspipe.metrics.LinkMRR`), else ``None`` (the default rule)."""
        return None if self.tgb is None else tgb_reciprocal_rank_sum(self.tgb.evaluator)

    def split_sizes(self) -> dict[str, int]:
        """Number of events in each split."""
        return {name: int(getattr(self.split, name).numel()) for name in ("train", "val", "test")}

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> TemporalBatchLoader:
        """Training batches; training negatives are drawn per batch."""
        candidates = (
            self.events.dst[self.split.train]
            if self.hparams.train_negatives == "train_dst"
            else torch.arange(self.num_nodes)
        )
        return self._loader(self.split.train, self.train_graph, negative_sampler=DestinationSampler(candidates))

    def val_dataloader(self) -> TemporalBatchLoader:
        """Validation batches with fixed negatives (one, or ``mrr_negatives`` with ``val_mrr``; TGB's for a TGB set)."""
        q = self.hparams.mrr_negatives if self.hparams.val_mrr else 1
        negatives = self.tgb.val_negatives if self.tgb is not None else self._fixed_negatives(self.split.val, q, 1)
        return self._loader(self.split.val, self.full_graph, negatives=negatives, new_node=self.split.val_new_node)

    def test_dataloader(self) -> TemporalBatchLoader:
        """Test batches with ``mrr_negatives`` fixed negatives per event (TGB's for a TGB set)."""
        q = self.hparams.mrr_negatives
        negatives = self.tgb.test_negatives if self.tgb is not None else self._fixed_negatives(self.split.test, q, 2)
        return self._loader(self.split.test, self.full_graph, negatives=negatives, new_node=self.split.test_new_node)

    def _fixed_negatives(self, eids: Tensor, q: int, stage_key: int) -> Tensor:
        candidates = torch.arange(self.num_nodes) if self.hparams.eval_negatives == "all" else self.events.dst.unique()
        return fixed_negatives(self.events.dst[eids], q, candidates, seed=self.hparams.seed * 7919 + stage_key)

    def _loader(self, eids: Tensor, graph: TemporalGraph, **kwargs: Any) -> TemporalBatchLoader:
        rank, world_size = 0, 1
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        return TemporalBatchLoader(
            self.events,
            eids,
            graph,
            self.hparams.batch_size,
            self.hparams.num_neighbors,
            sampling=self.hparams.sampling,
            visibility=self.hparams.neighbor_visibility,
            seed=self.hparams.seed,
            rank=rank,
            world_size=world_size,
            **kwargs,
        )

    # ------------------------------------------------------------------ helpers
    def _load(
        self, events: EventStream | None, path: str | None, name: str | None, format: str, options: dict[str, Any]
    ) -> EventStream:
        given = [arg for arg, value in (("events", events), ("path", path), ("name", name)) if value is not None]
        if len(given) > 1:
            raise ValueError(
                f"TemporalDataModule: got {' and '.join(f'`{arg}`' for arg in given)}; "
                "pass only one of `events`, `path` and `name`."
            )
        if name is not None:
            if format != "auto":
                raise ValueError(
                    f"TemporalDataModule: `format` ({format!r}) applies to `path`; the data set {name!r} "
                    "is read in its registered format. Drop `format`, or pass `path` instead of `name`."
                )
            if is_tgb_name(name):
                self.tgb = load_tgb(name, **options)
                return self.tgb.events
            return load_dataset(name, **options)
        if events is not None:
            if not isinstance(events, EventStream):
                raise TypeError(f"TemporalDataModule: `events` must be an EventStream, got {type(events).__name__}.")
            return events
        if path is not None:
            return load_events(Path(path), format=format, **options)
        hp = self.hparams
        return synthetic_events(hp.synthetic_nodes, hp.synthetic_events, hp.synthetic_edge_dim, seed=hp.seed)

    def _check_tgb_protocol(self, val_ratio: float, test_ratio: float, new_node_ratio: float | None) -> None:
        """A TGB set is split as TGB splits it: 15 % validation, 15 % test, no nodes held out."""
        if (val_ratio, test_ratio) != (0.15, 0.15) or new_node_ratio not in (None, 0.0):
            raise ValueError(
                f"TemporalDataModule: {self.events.name} is split as TGB splits it (val_ratio=0.15, test_ratio=0.15, "
                f"no nodes held out), got val_ratio={val_ratio}, test_ratio={test_ratio}, "
                f"new_node_ratio={new_node_ratio}. Drop these arguments."
            )

    def _check_split_sizes(self) -> None:
        sizes = self.split_sizes()
        for name, size in sizes.items():
            if size == 0:
                raise ValueError(
                    f"TemporalDataModule: the {name} split of {self.events.name} is empty (sizes {sizes}); "
                    "adjust val_ratio/test_ratio or use more events."
                )
            if self.hparams.batch_size > size:
                raise ValueError(
                    f"TemporalDataModule: batch_size {self.hparams.batch_size} is larger than the {name} split "
                    f"of {self.events.name} ({size} events); use batch_size ≤ {min(sizes.values())}."
                )
