"""Event streams: the chronological interaction data every other part consumes."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

__all__ = ["EventStream", "EventStreamError"]


class EventStreamError(ValueError):
    """Raised when events, features or labels are malformed (names the source and the problem)."""


@dataclass
class EventStream:
    """A chronological stream of interaction events ``(src, dst, t)`` on nodes ``0 … N−1``.

    Args:
        src: Source node of each event.
        dst: Destination node of each event.
        t: Event times, non-decreasing.
        edge_feat: Optional features of each event.
        label: Optional label of each event (for example JODIE's state label).
        node_feat: Optional features of each node.
        num_nodes: Number of nodes ``N``; defaults to ``max(src, dst) + 1``.
        node_ids: Raw id of each node when a reader had to map ids (``node_ids[i]`` is the raw id
            of node ``i``), else ``None``.
        name: Where the events came from, used in error messages.
        sort: Sort the events by time first (stable: ties keep their order; features and labels
            move with their events). Without it, unsorted times raise.

    Shapes:
        - src, dst: ``[E]`` int64
        - t: ``[E]`` float64 (float64 keeps Unix-second timestamps exact)
        - edge_feat: ``[E, D_e]`` float32
        - label: ``[E]``
        - node_feat: ``[N, D_n]`` float32
        - node_ids: ``[N]`` numpy array (int or str)

    Raises:
        EventStreamError: on unsorted or non-finite times, negative ids, ids ≥ ``num_nodes``, or
            feature/label rows that do not match the events. Validation runs on construction.
    """

    src: Tensor
    dst: Tensor
    t: Tensor
    edge_feat: Tensor | None = None
    label: Tensor | None = None
    node_feat: Tensor | None = None
    num_nodes: int | None = None  # type: ignore[assignment]  # resolved in __post_init__
    node_ids: np.ndarray | None = None
    name: str = field(default="events", compare=False)
    sort: InitVar[bool] = False

    def __post_init__(self, sort: bool = False) -> None:
        self.src = _as_ids(self.src, "src", self.name)
        self.dst = _as_ids(self.dst, "dst", self.name)
        self.t = torch.as_tensor(self.t, dtype=torch.float64)
        if self.edge_feat is not None:
            self.edge_feat = torch.as_tensor(self.edge_feat, dtype=torch.float32)
            if self.edge_feat.dim() == 1:
                self.edge_feat = self.edge_feat.unsqueeze(1)
        if self.node_feat is not None:
            self.node_feat = torch.as_tensor(self.node_feat, dtype=torch.float32)
        if self.label is not None:
            self.label = torch.as_tensor(self.label)
        if sort:
            self._sort_in_place()
        if self.num_nodes is None:
            self.num_nodes = int(max(self.src.max(), self.dst.max())) + 1 if len(self.src) else 0
        self.validate()

    # ------------------------------------------------------------------ properties
    @property
    def num_events(self) -> int:
        """Number of events ``E``."""
        return int(self.src.numel())

    @property
    def edge_dim(self) -> int:
        """Width ``D_e`` of the edge features (0 when there are none)."""
        return 0 if self.edge_feat is None else int(self.edge_feat.shape[1])

    @property
    def node_dim(self) -> int:
        """Width ``D_n`` of the node features (0 when there are none)."""
        return 0 if self.node_feat is None else int(self.node_feat.shape[1])

    def __len__(self) -> int:
        return self.num_events

    def __repr__(self) -> str:
        span = f"{float(self.t[0]):g} … {float(self.t[-1]):g}" if self.num_events else "empty"
        return (
            f"EventStream(name={self.name!r}, num_events={self.num_events}, num_nodes={self.num_nodes}, "
            f"edge_dim={self.edge_dim}, node_dim={self.node_dim}, t={span})"
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check shapes, ids and time order; raise :class:`EventStreamError` naming the problem."""
        where = f"{self.name}"
        num_events = self.num_events
        if num_events == 0:
            raise EventStreamError(f"{where}: the event stream is empty (no events to train on).")
        for col, tensor in (("dst", self.dst), ("t", self.t)):
            if tensor.shape != (num_events,):
                raise EventStreamError(
                    f"{where}: `{col}` has shape {tuple(tensor.shape)} but `src` has {num_events} events."
                )
        finite = torch.isfinite(self.t)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0])
            raise EventStreamError(f"{where}: timestamp of event {row} is {float(self.t[row])} (NaN or infinite).")
        first_unsorted = first_decrease(self.t)
        if first_unsorted is not None:
            raise EventStreamError(
                f"{where}: timestamps are not sorted (event {first_unsorted}: "
                f"{float(self.t[first_unsorted]):g} < {float(self.t[first_unsorted - 1]):g}). "
                "Pass `sort=True` to sort them."
            )
        top = int(max(self.src.max(), self.dst.max()))
        if top >= self.num_nodes:
            raise EventStreamError(f"{where}: node id {top} is ≥ num_nodes={self.num_nodes}.")
        for col, tensor in (("edge_feat", self.edge_feat), ("label", self.label)):
            if tensor is not None and tensor.shape[0] != num_events:
                raise EventStreamError(
                    f"{where}: `{col}` has {tensor.shape[0]} rows but there are {num_events} events."
                )
        if self.node_feat is not None and self.node_feat.shape[0] != self.num_nodes:
            raise EventStreamError(
                f"{where}: `node_feat` has {self.node_feat.shape[0]} rows but there are {self.num_nodes} nodes."
            )
        if self.node_ids is not None and len(self.node_ids) != self.num_nodes:
            raise EventStreamError(
                f"{where}: `node_ids` has {len(self.node_ids)} entries but there are {self.num_nodes} nodes."
            )

    # ------------------------------------------------------------------ transforms
    def _sort_in_place(self) -> None:
        if first_decrease(self.t) is None:
            return
        order = torch.sort(self.t, stable=True).indices
        self.src, self.dst, self.t = self.src[order], self.dst[order], self.t[order]
        if self.edge_feat is not None and self.edge_feat.shape[0] == order.numel():
            self.edge_feat = self.edge_feat[order]
        if self.label is not None and self.label.shape[0] == order.numel():
            self.label = self.label[order]

    def select(self, index: Tensor, validate: bool = True) -> EventStream:
        """Return the events at ``index`` (``[E']`` int64 or bool mask), keeping all nodes.

        Shapes:
            - index: ``[E']`` int64 or ``[E]`` bool
        """
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        sub = object.__new__(EventStream)
        sub.__dict__.update(self.__dict__)
        sub.src, sub.dst, sub.t = self.src[index], self.dst[index], self.t[index]
        sub.edge_feat, sub.label = pick(self.edge_feat), pick(self.label)
        if validate:
            sub.validate()
        return sub

    def with_name(self, name: str) -> EventStream:
        """Return a shallow copy named ``name``."""
        return replace(self, name=name)


def first_decrease(t: Tensor) -> int | None:
    """Index of the first element smaller than its predecessor, or ``None`` when ``t`` is sorted.

    Shapes:
        - t: ``[E]``
    """
    if t.numel() < 2:
        return None
    bad = (t[1:] < t[:-1]).nonzero()
    return None if bad.numel() == 0 else int(bad[0]) + 1


def _as_ids(values: Tensor | np.ndarray, column: str, where: str) -> Tensor:
    """Convert ``values`` to int64 node ids, rejecting floats with fractions and negative ids."""
    tensor = torch.as_tensor(values)
    if tensor.dtype.is_floating_point:
        frac = tensor != torch.floor(tensor)
        if bool(frac.any()) or not bool(torch.isfinite(tensor).all()):
            row = int((frac | ~torch.isfinite(tensor)).nonzero()[0])
            raise EventStreamError(
                f"{where}: `{column}` of event {row} is {float(tensor[row])}, not an integer node id."
            )
    elif tensor.dtype == torch.bool or not (tensor.dtype.is_signed or tensor.dtype == torch.uint8):
        raise EventStreamError(f"{where}: `{column}` has dtype {tensor.dtype}; node ids must be integers.")
    tensor = tensor.to(torch.int64).reshape(-1)
    if tensor.numel() and bool((tensor < 0).any()):
        row = int((tensor < 0).nonzero()[0])
        raise EventStreamError(f"{where}: `{column}` of event {row} is {int(tensor[row])}; node ids must be ≥ 0.")
    return tensor
