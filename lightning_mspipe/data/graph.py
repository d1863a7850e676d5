"""Temporal adjacency (T-CSR) and vectorized most-recent / uniform temporal neighbour samplers.

Stage 1 of the pipeline (DESIGN.md §1, §5): for every root ``(node, time)`` find the events of
``node`` that happened strictly before ``time`` (DESIGN.md §2) and return ``K`` of them as a
:class:`~lightning_mspipe.data.batch.NeighborBlock`.

How a root finds its cut-off with one ``searchsorted`` (exact for any float64 times):

Events are sorted by time with ties kept in index order, so for every event index ``e``
``t[e] < t_root  ⇔  e < time_cut`` where ``time_cut = searchsorted(t, t_root, side="left")``
is the first event whose time is not earlier than the root's. A time cut is therefore an
*event-index* cut. Inside a node's T-CSR segment the entries are sorted by event index (which
is the same as by ``(time, index)``), so the visible entries of a root are a prefix of its
segment: those with ``eid < cut`` where ``cut = min(time_cut, max_eid)``. Both bounds are
index bounds on the same sorted order, so their conjunction is again a prefix: ``max_eid``
costs nothing extra. To search every root's own segment in a single call we keep one global
integer key per entry, ``key = node · (E + 1) + eid``, which is non-decreasing over the whole
T-CSR (segments are laid out by node, entries by eid). The root's query key
``node · (E + 1) + cut`` with ``0 ≤ cut ≤ E < E + 1`` lies inside its node's key range, so
``searchsorted(key, query, side="left")`` is the end of the root's visible prefix. All of this
is integer arithmetic on int64 (no ``node · BIG + time`` float key whose rounding could let a
tie leak), and the float64 comparison happens only once, on the stream's own sorted times.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_mspipe.data.batch import NeighborBlock
from lightning_mspipe.data.events import EventStream

__all__ = ["SAMPLING_STRATEGIES", "TemporalGraph"]

#: Names accepted by :meth:`TemporalGraph.sample`.
SAMPLING_STRATEGIES: tuple[str, ...] = ("recent", "uniform")

_INT64_MAX = 2**63 - 1


class TemporalGraph:
    """Per-node incident events sorted by time (a T-CSR) with vectorized temporal samplers.

    Every event ``e = (src, dst, t)`` appears in the list of both endpoints (the list of
    ``src`` holds neighbour ``dst`` and vice versa). A self-loop (``src == dst``) appears once
    in its node's list, with itself as the neighbour. Within a node's list entries are ordered
    by time, ties by event index ascending.

    Args:
        events: The full, chronologically sorted event stream.
        eids: Optional subset of events to hold, as ``[E']`` int64 event indices (any order,
            no duplicates) or an ``[E]`` bool mask; for example the training events only. The
            neighbour event ids stay the **original** indices into ``events``. ``None`` holds
            every event.

    Shapes:
        - indptr: ``[N + 1]`` int64, node ``n``'s entries are ``indptr[n] : indptr[n + 1]``
        - nbr: ``[nnz]`` int64, the other endpoint of each entry
        - eid: ``[nnz]`` int64, the event index of each entry (into ``events``)
        - ts: ``[nnz]`` float64, the event time of each entry
        - ``nnz = 2·E' − (self-loops among the held events)``

    Building costs one sort of ``2·E'`` unique int64 keys and ``O(N + E)`` memory (the
    adjacency plus a copy of the stream's ``[E]`` times, needed to turn root times into
    index cut-offs).

    Raises:
        ValueError: when ``eids`` is out of range, has duplicates, or a mask of the wrong length.
        TypeError: when ``eids`` is not an integer or bool tensor.
    """

    def __init__(self, events: EventStream, eids: Tensor | None = None) -> None:
        num_events, num_nodes = events.num_events, int(events.num_nodes)
        if num_nodes * (num_events + 1) + num_events > _INT64_MAX:
            raise ValueError(
                f"`TemporalGraph`: num_nodes={num_nodes} × (num_events={num_events} + 1) overflows the "
                "int64 search key; split the stream into smaller graphs."
            )
        held = self._held_events(eids, num_events)
        src, dst = events.src[held], events.dst[held]
        loop = src == dst
        # Entry j of [src-side, dst-side]: owner node, other endpoint, event index; the dst-side
        # copy of a self-loop is dropped so a self-loop appears once.
        keep_dst = ~loop
        owner = torch.cat([src, dst[keep_dst]])
        other = torch.cat([dst, src[keep_dst]])
        eid = torch.cat([held, held[keep_dst]])
        stride = num_events + 1
        key = owner * stride + eid
        key, order = torch.sort(key)  # keys are unique per entry, so the order is total
        self.num_nodes: int = num_nodes
        self.num_events: int = num_events
        self.held_events: int = int(held.numel())
        self.indptr: Tensor = torch.zeros(num_nodes + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(owner, minlength=num_nodes), dim=0, out=self.indptr[1:])
        # Columns carry one extra all-zero slot at index nnz: padded sample slots point there, so
        # a gather needs no masking afterwards (nbr/eid/ts below are views without it).
        pad = torch.zeros(1, dtype=torch.int64)
        self._nbr: Tensor = torch.cat([other[order], pad])
        self._eid: Tensor = torch.cat([eid[order], pad])
        self._ts: Tensor = events.t[self._eid]
        self._ts[-1] = 0.0
        self._key: Tensor = key
        self._stride: int = stride
        self._event_t: Tensor = events.t

    @property
    def nbr(self) -> Tensor:
        """``[nnz]`` int64: the other endpoint of each entry."""
        return self._nbr[:-1]

    @property
    def eid(self) -> Tensor:
        """``[nnz]`` int64: the event index (into the original stream) of each entry."""
        return self._eid[:-1]

    @property
    def ts(self) -> Tensor:
        """``[nnz]`` float64: the event time of each entry."""
        return self._ts[:-1]

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _held_events(eids: Tensor | None, num_events: int) -> Tensor:
        """Sorted, validated ``[E']`` int64 indices of the events the graph holds."""
        if eids is None:
            return torch.arange(num_events, dtype=torch.int64)
        eids = torch.as_tensor(eids)
        if eids.dtype == torch.bool:
            if eids.shape != (num_events,):
                raise ValueError(
                    f"`TemporalGraph`: the bool `eids` mask has shape {tuple(eids.shape)} but the stream "
                    f"has {num_events} events; pass a mask of shape ({num_events},) or event indices."
                )
            return eids.nonzero().view(-1)
        if eids.dtype.is_floating_point or eids.dtype.is_complex:
            raise TypeError(f"`TemporalGraph`: `eids` has dtype {eids.dtype}; pass int64 event indices.")
        eids = eids.to(torch.int64).reshape(-1)
        if eids.numel() == 0:
            return eids
        bad = (eids < 0) | (eids >= num_events)
        if bool(bad.any()):
            value = int(eids[bad.nonzero()[0]])
            raise ValueError(
                f"`TemporalGraph`: event index {value} in `eids` is out of range for a stream of "
                f"{num_events} events (valid: 0 … {num_events - 1})."
            )
        held = torch.sort(eids).values
        dup = held[1:] == held[:-1]
        if bool(dup.any()):
            value = int(held[1:][dup][0])
            raise ValueError(f"`TemporalGraph`: event index {value} appears more than once in `eids`.")
        return held

    @property
    def nnz(self) -> int:
        """Number of adjacency entries ``nnz``."""
        return int(self.eid.numel())

    def degree(self, nodes: Tensor | None = None) -> Tensor:
        """Number of held events incident to each node (``[N]``, or ``[B]`` for ``nodes``)."""
        deg = self.indptr[1:] - self.indptr[:-1]
        return deg if nodes is None else deg[nodes]

    def to(self, device: torch.device | str) -> TemporalGraph:
        """Return a copy whose tensors live on ``device`` (sampling then runs there)."""
        out = object.__new__(TemporalGraph)
        out.__dict__.update(
            {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        )
        return out

    def __repr__(self) -> str:
        return (
            f"TemporalGraph(num_nodes={self.num_nodes}, num_events={self.num_events}, "
            f"held_events={self.held_events}, nnz={self.nnz})"
        )

    # ------------------------------------------------------------------ sampling
    def visible_range(
        self, nodes: Tensor, times: Tensor, max_eid: int | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Start and end of each root's visible prefix in the T-CSR (see the module docstring).

        Args:
            nodes: Root nodes.
            times: Root times; an entry is visible when its time is strictly earlier.
            max_eid: Optional event-index bound (int, or one per root): only events with index
                ``< max_eid`` are visible.

        Returns:
            ``(start, end)``: root ``i`` sees entries ``start[i] : end[i]``.

        Shapes:
            - nodes, times, max_eid: ``[B]``
            - start, end: ``[B]`` int64

        Costs two ``searchsorted`` calls, ``O(B · log E)``; no host sync. Inputs are not checked
        here (``nodes`` must be int64 ids in range): :meth:`sample` validates them.
        """
        cut = torch.searchsorted(self._event_t, times, side="left")
        if isinstance(max_eid, Tensor):
            cut = torch.minimum(cut, max_eid.clamp(min=0))
        elif max_eid is not None:
            cut = cut.clamp(max=max(int(max_eid), 0))
        start = self.indptr.index_select(0, nodes)
        end = torch.searchsorted(self._key, nodes * self._stride + cut, side="left")
        return start, end

    def sample(
        self,
        nodes: Tensor,
        times: Tensor,
        k: int,
        strategy: Literal["recent", "uniform"] = "recent",
        max_eid: int | Tensor | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> NeighborBlock:
        """Sample ``K`` temporal neighbours of every root ``(nodes[i], times[i])``.

        A root sees the events of its node with time strictly less than ``times[i]`` and, when
        ``max_eid`` is given, event index ``< max_eid`` (``max_eid`` = the first event index of a
        batch hides the batch's own events, DESIGN.md §2).

        - ``"recent"``: the ``K`` most recent visible events, most recent first; events at the
          same time come later-index first. Roots with fewer than ``K`` get padding at the end.
        - ``"uniform"``: ``K`` draws uniformly **with replacement** from the visible events (as
          TGL and TGN do), so an event can appear more than once; a root with no visible event
          gets only padding. Draws use ``generator`` (the global RNG when ``None``).

        Padding slots have ``mask`` False, node 0, eid 0 and time 0.

        Args:
            nodes: Root node ids in ``0 … N−1``.
            times: Root times (cast to float64).
            k: Neighbours per root ``K`` (≥ 1).
            strategy: ``"recent"`` or ``"uniform"``.
            max_eid: Optional event-index bound, an int or one per root.
            generator: RNG for ``"uniform"``; must live on the graph's device.
            validate: Check ids and times (one host sync); pass ``False`` on a hot path whose
                inputs are known good.

        Returns:
            The neighbours; ``eids`` are indices into the original stream.

        Shapes:
            - nodes, times: ``[B]``; max_eid: scalar or ``[B]``
            - returned nodes, eids, times, mask: ``[B, K]``

        Raises:
            ValueError: on an unknown strategy, ``k < 1``, mismatched shapes, node ids outside
                ``0 … N−1`` or non-finite times.

        Cost: ``O(B · (log E + K))`` time and ``O(B · K)`` memory, fully vectorized; with
        ``validate=True`` one host sync for the checks.
        """
        if strategy not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"`TemporalGraph.sample`: unknown strategy {strategy!r}; valid strategies: "
                f"{', '.join(repr(s) for s in SAMPLING_STRATEGIES)}."
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`TemporalGraph.sample`: k={k!r}; pass an int k ≥ 1 neighbours per root.")
        nodes = torch.as_tensor(nodes, device=self.indptr.device)
        times = torch.as_tensor(times, dtype=torch.float64, device=self.indptr.device)
        if max_eid is not None and isinstance(max_eid, Tensor):
            max_eid = max_eid.to(device=self.indptr.device, dtype=torch.int64)
        nodes = self._check_shapes(nodes, times, max_eid)
        if validate:
            self._check_values(nodes, times)
        start, end = self.visible_range(nodes, times, max_eid)
        count = end - start
        num_roots, nnz = nodes.numel(), self.nnz
        if strategy == "recent":
            offset = torch.arange(k, device=nodes.device)
            mask = offset < count.unsqueeze(1)
            idx = end.unsqueeze(1) - 1 - offset  # walk backwards from the cut: newest first
        else:
            draw = torch.rand(num_roots, k, generator=generator, dtype=torch.float64, device=nodes.device)
            pick = (draw * count.unsqueeze(1)).to(torch.int64)
            # u < 1 so u·c < c in exact arithmetic; the clamp guards float64 rounding at huge c.
            idx = start.unsqueeze(1) + torch.minimum(pick, count.unsqueeze(1) - 1)
            mask = (count > 0).unsqueeze(1).expand(num_roots, k).contiguous()
        # Padding reads the all-zero slot nnz, so the three gathers need no masking afterwards;
        # flat index_select beat [B, K] advanced indexing + torch.where ~2x (bench/sampler.py).
        flat = torch.where(mask, idx, nnz).view(-1)
        return NeighborBlock(
            nodes=self._nbr.index_select(0, flat).view(num_roots, k),
            eids=self._eid.index_select(0, flat).view(num_roots, k),
            times=self._ts.index_select(0, flat).view(num_roots, k),
            mask=mask,
        )

    @staticmethod
    def _check_shapes(nodes: Tensor, times: Tensor, max_eid: int | Tensor | None) -> Tensor:
        """Validate root shapes and dtypes (no host sync); return ``nodes`` as int64."""
        where = "`TemporalGraph.sample`"
        if nodes.dim() != 1 or times.shape != nodes.shape:
            raise ValueError(
                f"{where}: `nodes` has shape {tuple(nodes.shape)} and `times` {tuple(times.shape)}; "
                "pass two 1-D tensors of the same length B."
            )
        if isinstance(max_eid, Tensor) and max_eid.dim() != 0 and max_eid.shape != nodes.shape:
            raise ValueError(
                f"{where}: `max_eid` has shape {tuple(max_eid.shape)} but there are {nodes.numel()} roots; "
                "pass an int or one bound per root."
            )
        if nodes.dtype.is_floating_point or nodes.dtype == torch.bool:
            raise ValueError(f"{where}: `nodes` has dtype {nodes.dtype}; pass int64 node ids.")
        return nodes.to(torch.int64)

    def _check_values(self, nodes: Tensor, times: Tensor) -> None:
        """Raise when a root id is outside ``0 … N−1`` or a root time is not finite (one sync)."""
        where = "`TemporalGraph.sample`"
        if nodes.numel() == 0:
            return
        low, high = torch.aminmax(nodes)
        if bool((low >= 0) & (high < self.num_nodes) & torch.isfinite(times).all()):  # the one sync
            return
        bad = (nodes < 0) | (nodes >= self.num_nodes) | ~torch.isfinite(times)
        row = int(bad.nonzero()[0])
        node = int(nodes[row])
        if 0 <= node < self.num_nodes:
            raise ValueError(
                f"{where}: time of root {row} is {float(times[row])}; root times must be finite."
            )
        raise ValueError(
            f"{where}: node id {node} (root {row}) is out of range for num_nodes={self.num_nodes} "
            f"(valid: 0 … {self.num_nodes - 1})."
        )
