"""StalenessMitigation: when to blend stale memory, with which similar nodes, and the state that a checkpoint keeps.

A plain object that meets training at one seam: a :class:`~lightning_mspipe.models.base.MemoryTGNN`
holding one (:meth:`~lightning_mspipe.models.base.MemoryTGNN.use_staleness_mitigation`;
``MSPipeStrategy(mitigation=...)`` hands it over) calls :meth:`StalenessMitigation.before_step`
at the start of every training step, :meth:`StalenessMitigation.end_epoch` at the end of every
training epoch, and keeps its :meth:`StalenessMitigation.state_dict` in the model's
checkpoints. The tensor logic is in :mod:`lightning_mspipe.mitigation` and
:mod:`lightning_mspipe.similarity`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemoryStore
from lightning_mspipe.mitigation import (
    SIMILARITIES,
    blend_stale_occurrences,
    neighbor_candidates,
    refresh_roots,
    stale_roots,
)
from lightning_mspipe.similarity import CosineNeighbors

__all__ = ["StalenessMitigation"]


class DeviceCount:
    """A running count whose increments stay tensors on their device until the value is read
    (reading syncs once), so adding to it costs a training step no host sync."""

    def __init__(self) -> None:
        self._host = 0
        self._pending: Tensor | None = None

    def add(self, count: Tensor) -> None:
        self._pending = count if self._pending is None else self._pending + count

    @property
    def value(self) -> int:
        if self._pending is not None:
            self._host += int(self._pending)
            self._pending = None
        return self._host

    @value.setter
    def value(self, value: int) -> None:
        self._host, self._pending = int(value), None


class StalenessMitigation:
    """Blends the memory of stale root occurrences with that of similar, more recently updated nodes
    before each training step on a stale batch (see :mod:`lightning_mspipe.mitigation`).

    The candidates' memory is read from the live store, after the writes the batch's snapshot
    missed; in ``exact`` mode the read first waits until the writes of every earlier batch are
    committed, so the blend does not depend on timing (this serialises the write before the
    step on a stale batch that has stale roots; ``bounded`` mode reads whatever is committed).
    The model's memory writer decides which (``live_memory``).

    The count of blended occurrences stays a tensor on the batch's device until it is read
    (:attr:`blended_roots`, :attr:`blended_share`, :meth:`state_dict`), so a step adds no host
    sync for it.

    Args:
        lam: Weight of the root's own memory (``lam · s + (1 − lam) · mean(s_u)``).
        quantile: Root occurrences whose Δt = event time − memory time exceeds this quantile of
            the batch are stale.
        top_k: Similar nodes averaged at most.
        similarity: ``"neighbors"`` (the sampled temporal neighbours) or ``"cosine"`` (a top-k
            cosine table of memory, :class:`~lightning_mspipe.similarity.CosineNeighbors`; rebuilt
            at every complete epoch's end and, until the first such end, every ``rebuild_every``
            stale batches from the memory so far, so it serves in epoch 0 too; stale roots use the
            neighbours while it is empty). The table is part of the checkpoint.
        rebuild_every: Stale batches between rebuilds of the cosine table before the first epoch end.
        chunk: Block size of the cosine table's top-k (memory bound ``chunk × (chunk + top_k)`` scores).
        refresh_roots: First replace every root's snapshot row by its live row
            (:func:`~lightning_mspipe.mitigation.refresh_roots`), so the roots see the writes
            their snapshot missed; the blend then runs on the refreshed rows. In ``exact`` mode a
            root's memory is then exactly synchronous training's, and the write of the previous
            batch is serialised before the step; in ``bounded`` mode it reads whatever is
            committed. Costs a gather of the root rows per stale batch. Off by default (MSPipe's
            method is the blend alone).
    """

    def __init__(self, lam: float = 0.9, quantile: float = 0.99, top_k: int = 10, similarity: str = "neighbors",
                 rebuild_every: int = 50, chunk: int = 2048, refresh_roots: bool = False) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"StalenessMitigation: lam must be in [0, 1], got {lam}.")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"StalenessMitigation: quantile must be in (0, 1), got {quantile}.")
        if top_k < 1:
            raise ValueError(f"StalenessMitigation: top_k must be ≥ 1, got {top_k}.")
        if similarity not in SIMILARITIES:
            raise ValueError(f"StalenessMitigation: unknown similarity {similarity!r}; choose one of {SIMILARITIES}.")
        if rebuild_every < 1:
            raise ValueError(f"StalenessMitigation: rebuild_every must be ≥ 1 batch, got {rebuild_every}.")
        self.lam, self.quantile, self.top_k, self.similarity = lam, quantile, top_k, similarity
        self.rebuild_every, self.refresh_roots = rebuild_every, refresh_roots
        self.cosine = CosineNeighbors(top_k, chunk) if similarity == "cosine" else None
        self.built_at_epoch_end = False  # the cosine table comes from a complete epoch
        self.batches_since_rebuild = 0
        self.seen_roots = 0
        self._blended = DeviceCount()
        self._refreshed = DeviceCount()

    # ------------------------------------------------------------------ counters
    @property
    def blended_roots(self) -> int:
        """Training root occurrences (of stale batches) whose memory was blended so far (reading it syncs once)."""
        return self._blended.value

    @blended_roots.setter
    def blended_roots(self, value: int) -> None:
        self._blended.value = value

    @property
    def refreshed_rows(self) -> int:
        """Root rows (of stale batches) that ``refresh_roots`` found changed in the live store so far."""
        return self._refreshed.value

    @refreshed_rows.setter
    def refreshed_rows(self, value: int) -> None:
        self._refreshed.value = value

    @property
    def blended_share(self) -> float:
        """Share of training root occurrences (of stale batches) whose memory was blended so far."""
        return self.blended_roots / max(self.seen_roots, 1)

    # ------------------------------------------------------------------ the seam
    def before_step(self, batch: TemporalBatch, live_memory: Callable[[], MemoryStore]) -> None:
        """Blend the batch's stale root occurrences in place (``batch.memory``, ``batch.memory_index``).

        Does nothing for a batch that read fresh memory (staleness 0) or carries no snapshot.

        Args:
            batch: The training batch, with its memory snapshot (stage 3 done).
            live_memory: Returns the store to read candidates from; called only when a stale
                occurrence or a table rebuild needs it (``exact`` mode waits there for earlier writes).
        """
        if batch.memory is None or batch.index == batch.memory.version:
            return  # fresh memory (or fetched inside the step): nothing is stale because of the pipeline
        assert batch.neighbors is not None
        self.seen_roots += batch.neighbors.num_roots
        if self.refresh_roots:
            self._refreshed.add(refresh_roots(batch, live_memory()))
        positions = stale_roots(batch, self.quantile)
        rebuild = self.cosine is not None and not self.built_at_epoch_end
        if rebuild:
            self.batches_since_rebuild += 1
            rebuild = self.batches_since_rebuild >= self.rebuild_every
        if positions.numel() == 0 and not rebuild:
            return
        store = live_memory()
        if rebuild:
            self._rebuild(store)
        if self.cosine is not None and self.cosine.table is not None:
            candidates = self.cosine.candidates(batch.roots()[positions.to(batch.src.device)], store)
        else:
            candidates = neighbor_candidates(batch, positions, self.top_k, store)
        self._blended.add(blend_stale_occurrences(batch, positions, self.lam, candidates).sum())

    def end_epoch(self, store: MemoryStore, complete: bool) -> None:
        """At the end of a training epoch, with every write committed: rebuild the cosine table if the
        epoch ran to its end (``complete``; an epoch cut by ``max_steps`` resumes, so its table is kept)."""
        if self.cosine is not None and complete:
            self._rebuild(store)
            self.built_at_epoch_end = True

    def _rebuild(self, store: MemoryStore) -> None:
        assert self.cosine is not None
        with store.reading():  # no write runs under the table's read (on a GPU: ordered by the store's events)
            self.cosine.rebuild(store.memory, store.mail_count > 0)
        self.batches_since_rebuild = 0

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The cosine table and its schedule, and the blend counters (so a resumed run blends the same way)."""
        return {"cosine": None if self.cosine is None else self.cosine.state_dict(),
                "built_at_epoch_end": self.built_at_epoch_end, "batches_since_rebuild": self.batches_since_rebuild,
                "blended_roots": self.blended_roots, "refreshed_rows": self.refreshed_rows, "seen_roots": self.seen_roots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.cosine is not None and state.get("cosine") is not None:
            self.cosine.load_state_dict(state["cosine"])
            self.built_at_epoch_end = bool(state["built_at_epoch_end"])
            self.batches_since_rebuild = int(state["batches_since_rebuild"])
        self.blended_roots, self.seen_roots = int(state["blended_roots"]), int(state["seen_roots"])
        self.refreshed_rows = int(state.get("refreshed_rows", 0))  # absent in checkpoints from before the option
