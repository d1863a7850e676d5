"""Chronological batch iterables with stage 1 (sample) and stage 2 (fetch features)."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import Tensor

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.data.events import EventStream
from lightning_mspipe.data.graph import TemporalGraph
from lightning_mspipe.data.negatives import DestinationSampler, batch_generator

__all__ = ["NEIGHBOR_VISIBILITY", "TemporalBatchLoader"]

#: Neighbour visibility rules accepted by :class:`TemporalBatchLoader`.
NEIGHBOR_VISIBILITY: tuple[str, ...] = ("time", "batch")


class TemporalBatchLoader:
    """A sized, strictly chronological iterable of :class:`TemporalBatch` over one split.

    Batch ``j`` holds the split's events ``j·batch_size … (j+1)·batch_size − 1`` in stream order
    (never shuffled). With ``world_size = W > 1``, rank ``r`` gets the ``r``-th of ``W`` contiguous
    slices of every global batch (``batch.global_size`` is the global batch's size); negatives are
    drawn for the global batch and then sliced, so they do not depend on the number of ranks.

    Neighbour visibility (DESIGN.md §2): with ``visibility="time"`` (the default, as in TGN's
    reference code, TGL and DyGLib) a root sees every event strictly earlier than its own time,
    earlier events of its own batch included; ``"batch"`` hides the whole global batch from
    every root, as PyG's ``LastNeighborLoader`` does. Memory never sees the batch's own events
    either way: it is written after the step.

    Iterating runs stage 1 (:meth:`sample`) and stage 2 (:meth:`fetch_features`) for each batch;
    the pipeline calls the two stages itself to time and overlap them. All random draws of
    batch ``j`` in epoch ``e`` come from a generator seeded by ``(seed, e, j)``, so a batch is the
    same whichever thread prepares it and whenever a run resumes.

    Args:
        events: The full event stream.
        eids: Event indices of this split, increasing.
        graph: Temporal graph that neighbours are sampled from.
        batch_size: Events per global batch.
        num_neighbors: Neighbours per root ``K``.
        sampling: ``"recent"`` or ``"uniform"``.
        negatives: Fixed negatives of the split (evaluation), or ``None`` to draw them per batch;
            ``-1`` pads the rows of events with fewer negatives (``TemporalBatch.neg_mask``).
        negative_sampler: Draws training negatives when ``negatives`` is ``None``.
        num_negatives: Negatives per positive drawn by ``negative_sampler``.
        new_node: Whether each event of the split touches a node unseen in training.
        visibility: ``"time"`` or ``"batch"`` (see above).
        seed: Seed of the per-batch generators.
        rank, world_size: This process's slice of each global batch.

    Shapes:
        - eids: ``[E_s]`` int64; negatives: ``[E_s, Q]``; new_node: ``[E_s]`` bool
    """

    def __init__(
        self,
        events: EventStream,
        eids: Tensor,
        graph: TemporalGraph,
        batch_size: int,
        num_neighbors: int,
        *,
        sampling: str = "recent",
        negatives: Tensor | None = None,
        negative_sampler: DestinationSampler | None = None,
        num_negatives: int = 1,
        new_node: Tensor | None = None,
        visibility: str = "time",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"TemporalBatchLoader: batch_size must be ≥ 1, got {batch_size}.")
        if negatives is None and negative_sampler is None:
            raise ValueError("TemporalBatchLoader: pass fixed `negatives` or a `sampler` to draw them.")
        if visibility not in NEIGHBOR_VISIBILITY:
            raise ValueError(
                f"TemporalBatchLoader: unknown visibility {visibility!r}; choose one of {NEIGHBOR_VISIBILITY}."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"TemporalBatchLoader: rank {rank} is outside 0 … {world_size - 1}.")
        if batch_size < world_size:
            raise ValueError(
                f"TemporalBatchLoader: batch_size {batch_size} is smaller than world_size {world_size}; "
                "every rank needs at least one event per batch."
            )
        last = eids.numel() % batch_size
        if world_size > 1 and 0 < last < world_size:
            raise ValueError(
                f"TemporalBatchLoader: the last global batch of this split has {last} events "
                f"({eids.numel()} events, batch_size {batch_size}), fewer than the {world_size} ranks, so a rank "
                "would get an empty slice. Choose a batch_size for which every batch has at least one event per "
                "rank (the remainder of events / batch_size is 0 or ≥ world_size)."
            )
        self.events = events
        self.eids = eids
        self.graph = graph
        self.batch_size = batch_size
        self.num_neighbors = num_neighbors
        self.sampling = sampling
        self.negatives = negatives
        self._padded = negatives is not None and bool((negatives < 0).any())  # once, not per batch
        self.negative_sampler = negative_sampler
        self.num_negatives = num_negatives
        self.new_node = new_node
        self.visibility = visibility
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = -1
        self._next_batch = 0
        self._restored = False
        self._epoch_given = False

    def __len__(self) -> int:
        return math.ceil(self.eids.numel() / self.batch_size)

    # ------------------------------------------------------------------ stages
    def sample(self, index: int) -> TemporalBatch:
        """Stage 1: the events, negatives and sampled temporal neighbours of batch ``index``."""
        start = index * self.batch_size
        stop = min(start + self.batch_size, self.eids.numel())
        positions = torch.arange(start, stop)
        # "batch": the whole global batch is hidden from every rank; "time": the time rule alone
        hide_from = int(self.eids[start]) if self.visibility == "batch" else None
        generator = batch_generator(self.seed, self.epoch, index)
        neg_mask = None
        if self.negatives is not None:
            neg_dst = self.negatives[positions]
            if self._padded:
                neg_mask = neg_dst >= 0
                neg_dst = torch.where(neg_mask, neg_dst, self.events.dst[self.eids[positions]].unsqueeze(1))
        else:  # drawn for the global batch, then sliced: the same negatives whatever the number of ranks
            assert self.negative_sampler is not None
            neg_dst = self.negative_sampler.sample(self.events.dst[self.eids[positions]], self.num_negatives, generator)
        if self.world_size > 1:
            rows = torch.tensor_split(torch.arange(positions.numel()), self.world_size)[self.rank]
            positions, neg_dst = positions[rows], neg_dst[rows]
            neg_mask = None if neg_mask is None else neg_mask[rows]
        eids = self.eids[positions]
        src, dst, t = self.events.src[eids], self.events.dst[eids], self.events.t[eids]
        batch = TemporalBatch(
            index=index,
            eids=eids,
            src=src,
            dst=dst,
            neg_dst=neg_dst,
            t=t,
            new_node=None if self.new_node is None else self.new_node[positions],
            neg_mask=neg_mask,
            global_size=stop - start,
        )
        batch.neighbors = self.graph.sample(
            batch.roots(),
            batch.root_times(),
            self.num_neighbors,
            strategy=self.sampling,
            max_eid=hide_from,
            generator=generator,
        )
        return batch

    def fetch_features(self, batch: TemporalBatch) -> TemporalBatch:
        """Stage 2: gather the edge features of the batch's events and of its neighbours' events."""
        feat = self.events.edge_feat
        if feat is not None:
            batch.edge_feat = feat[batch.eids]
            if batch.neighbors is not None:
                batch.nbr_edge_feat = feat[batch.neighbors.eids]
        return batch

    # ------------------------------------------------------------------ iteration
    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration's random draws (the trainer's epoch counter)."""
        if epoch != self.epoch:
            self._restored = False  # a restored position belongs to the restored epoch only
        self.epoch, self._epoch_given = epoch, True

    def start_epoch(self) -> int:
        """Move to the next epoch (or to the restored position) and return the first batch index.

        Without :meth:`set_epoch`, epochs count iterations from 0.
        """
        resume_mid_epoch = self._restored and self._next_batch < len(self)
        self._restored = False
        if not resume_mid_epoch:
            if not self._epoch_given:
                self.epoch += 1
            self._next_batch = 0
        self._epoch_given = False
        return self._next_batch

    def advance(self, index: int) -> None:
        """Record that batch ``index`` has been handed out (the position saved in checkpoints)."""
        self._next_batch = index + 1

    def __iter__(self) -> Iterator[TemporalBatch]:
        for index in range(self.start_epoch(), len(self)):
            batch = self.fetch_features(self.sample(index))
            self.advance(index)
            yield batch

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The O(1) position: epoch and next batch."""
        return {"epoch": self.epoch, "next_batch": self._next_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the saved position; the next iteration continues that epoch."""
        self.epoch = int(state["epoch"])
        self._next_batch = int(state["next_batch"])
        self._restored = True
