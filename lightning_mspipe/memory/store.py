"""MemoryStore: per-node memory, mailbox and timestamps, with versioned, thread-safe gather/scatter."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_mspipe.data.batch import _Transferable
from lightning_mspipe.memory.ordering import CudaStreams, StreamOrder

__all__ = ["MemorySnapshot", "MemoryStore", "MemoryWrite", "last_occurrence"]


@dataclass
class MemorySnapshot(_Transferable):
    """Copies of the memory rows of ``U`` nodes, taken at memory ``version`` (stage 3's output).

    Shapes:
        - nodes: ``[U]`` int64
        - memory: ``[U, D]``; last_update: ``[U]`` float64 (time of the last mail applied)
        - mailbox: ``[U, M, D_mail]``; mail_ts: ``[U, M]`` float64; mail_mask: ``[U, M]`` bool
    """

    nodes: Tensor
    memory: Tensor
    last_update: Tensor
    mailbox: Tensor
    mail_ts: Tensor
    mail_mask: Tensor
    version: int

    def last_event_time(self) -> Tensor:
        """Time of each node's latest event seen by memory: its newest mail, else ``last_update``. ``[U]``."""
        newest_mail = self.mail_ts.masked_fill(~self.mail_mask, float("-inf")).amax(dim=1)
        return torch.maximum(self.last_update, newest_mail)


@dataclass
class MemoryWrite(_Transferable):
    """One batch's update of the store (stage 5's input).

    ``own_mail`` says which mails come from the receiver's own event rather than one delivered to
    it as a temporal neighbour (APAN); when writes of several ranks merge, an own mail wins over
    a delivered one (:func:`~lightning_mspipe.memory.exchange.merge_writes`). ``None``: all are own.

    Shapes:
        - nodes: ``[W]`` int64, unique; memory: ``[W, D]``; last_update: ``[W]`` float64
        - mail_nodes: ``[V]`` int64, unique; mail: ``[V, D_mail]``; mail_ts: ``[V]`` float64;
          own_mail: ``[V]`` bool or ``None``
    """

    nodes: Tensor
    memory: Tensor
    last_update: Tensor
    mail_nodes: Tensor
    mail: Tensor
    mail_ts: Tensor
    own_mail: Tensor | None = None


def last_occurrence(nodes: Tensor) -> tuple[Tensor, Tensor]:
    """Unique nodes and the position of each one's last occurrence in ``nodes``.

    Returns:
        ``(unique [W], position [W])`` with ``nodes[position] == unique``.

    Shapes:
        - nodes: ``[B]`` int64
    """
    unique, inverse = torch.unique(nodes, return_inverse=True)
    position = torch.full((unique.numel(),), -1, dtype=torch.int64, device=nodes.device)
    position.scatter_reduce_(0, inverse, torch.arange(nodes.numel(), device=nodes.device), reduce="amax")
    return unique, position


class MemoryStore(nn.Module):
    """Memory of ``N`` nodes: state, last update time, a mailbox of ``M`` mails, and a version.

    The version counts committed writes. :meth:`gather` returns copies plus the version it saw;
    :meth:`scatter` applies one batch's :class:`MemoryWrite` and increments the version. Both
    hold a lock, so a reader in another thread never sees a half-done write; on a GPU the kernels
    of reads and writes issued on different streams are ordered by events
    (:class:`~lightning_mspipe.memory.ordering.StreamOrder`: a gather waits for the last write, a
    write for the gathers before it), without host syncs. A thread that waits for the version
    together with other conditions registers its own ``threading.Condition`` with
    :meth:`watch_version`: every change of the version notifies it. All state is in persistent
    buffers, so checkpoints carry it.

    Journal frames (:meth:`begin_journal`, :meth:`rollback`) record the pre-images of the rows
    that writes touch, so an evaluation phase can be undone in O(touched rows).

    Args:
        num_nodes: ``N``.
        memory_dim: ``D``.
        mail_dim: ``D_mail``.
        mailbox_size: ``M`` (1 for TGN/JODIE, 10 for APAN); a full mailbox overwrites its oldest mail.
        pin_memory: Keep the buffers in pinned host memory (the paper's large-graph setting);
            pinned buffers stay on the host when the module moves to a device.

    Shapes:
        - memory: ``[N, D]``; last_update: ``[N]``; mailbox: ``[N, M, D_mail]``; mail_ts: ``[N, M]``;
          mail_count: ``[N]`` (mails delivered so far); version: ``[]``
    """

    def __init__(
        self, num_nodes: int, memory_dim: int, mail_dim: int, mailbox_size: int = 1, pin_memory: bool = False
    ) -> None:
        super().__init__()
        for name, value in (("num_nodes", num_nodes), ("memory_dim", memory_dim), ("mail_dim", mail_dim),
                            ("mailbox_size", mailbox_size)):
            if value < 1:
                raise ValueError(f"MemoryStore: {name} must be ≥ 1, got {value}.")
        self.num_nodes, self.memory_dim, self.mail_dim, self.mailbox_size = num_nodes, memory_dim, mail_dim, mailbox_size
        self.pin_memory = pin_memory
        self.register_buffer("memory", torch.zeros(num_nodes, memory_dim))
        self.register_buffer("last_update", torch.zeros(num_nodes, dtype=torch.float64))
        self.register_buffer("mailbox", torch.zeros(num_nodes, mailbox_size, mail_dim))
        self.register_buffer("mail_ts", torch.zeros(num_nodes, mailbox_size, dtype=torch.float64))
        self.register_buffer("mail_count", torch.zeros(num_nodes, dtype=torch.int64))
        self.register_buffer("version", torch.zeros((), dtype=torch.int64))
        self._lock = threading.Condition(threading.RLock())
        self._version = 0  # host mirror of the version buffer
        self._watchers: weakref.WeakSet[threading.Condition] = weakref.WeakSet()
        self._order = StreamOrder(lambda: self._stream_events())  # looked up per call: the store may move
        self._written: list[Tensor] = []
        self._frames: list[list[tuple[Tensor, Tensor, dict[str, Tensor]]]] = []
        if pin_memory:
            self.pin()

    def pin(self) -> MemoryStore:
        """Keep the state in (pinned, where CUDA exists) host memory from now on, even when the model moves."""
        with self._lock:
            self.pin_memory = True
            for name, buf in list(self.named_buffers()):
                buf = buf.cpu()
                setattr(self, name, buf.pin_memory() if torch.cuda.is_available() else buf)
        return self

    _STATE = ("memory", "last_update", "mailbox", "mail_ts", "mail_count")

    @property
    def device(self) -> torch.device:
        return self.memory.device

    def _stream_events(self) -> CudaStreams | None:
        return CudaStreams(self.device) if self.device.type == "cuda" else None

    @property
    def current_version(self) -> int:
        """Committed writes so far (a host-side mirror of the ``version`` buffer: no device sync)."""
        return self._version

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Keep pinned host buffers on the host when the module moves to a device."""
        if self.pin_memory:
            return self
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Check the graph size, then load; every row may now be non-zero, so the next reset is full."""
        key = prefix + "memory"
        if key in state_dict and tuple(state_dict[key].shape) != tuple(self.memory.shape):
            raise ValueError(
                f"MemoryStore: the checkpoint's memory has shape {tuple(state_dict[key].shape)} "
                f"(nodes, dim) but this model has {tuple(self.memory.shape)}; it was trained on a graph "
                "with a different number of nodes or memory size."
            )
        with self._lock:
            self._order.before_write()
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
            self._order.after_write()
            self._written = [torch.arange(self.num_nodes, device=self.device)]
            self._version = int(self.version)
        self._notify_watchers()

    # ------------------------------------------------------------------ read / write
    def gather(self, nodes: Tensor, out: MemorySnapshot | None = None) -> MemorySnapshot:
        """Copy the rows of ``nodes`` (``[U]`` int64, on the store's device) with the version seen.

        Args:
            nodes: The rows to copy.
            out: Tensors of the snapshot's shapes and dtypes to copy into (for example views of a
                pinned staging buffer), or ``None`` to allocate them; its ``version`` is ignored.

        On a GPU the copy's kernels wait (device-side) for the last write.
        """
        with self._lock:
            self._order.before_read()
            valid_slots = torch.clamp(self.mail_count[nodes], max=self.mailbox_size)
            slot = torch.arange(self.mailbox_size, device=nodes.device)
            if out is None:
                snapshot = MemorySnapshot(
                    nodes=nodes,
                    memory=self.memory[nodes],
                    last_update=self.last_update[nodes],
                    mailbox=self.mailbox[nodes],
                    mail_ts=self.mail_ts[nodes],
                    mail_mask=slot.unsqueeze(0) < valid_slots.unsqueeze(1),
                    version=self._version,
                )
            else:
                out.nodes.copy_(nodes)
                for name in ("memory", "last_update", "mailbox", "mail_ts"):
                    torch.index_select(getattr(self, name), 0, nodes, out=getattr(out, name))
                torch.lt(slot.unsqueeze(0), valid_slots.unsqueeze(1), out=out.mail_mask)
                snapshot = MemorySnapshot(out.nodes, out.memory, out.last_update, out.mailbox, out.mail_ts,
                                          out.mail_mask, version=self._version)
            self._order.after_read()
            return snapshot

    @contextmanager
    def reading(self) -> Iterator[MemoryStore]:
        """Hold the store still for a reader of its buffers: no write starts inside the block, and on a GPU
        the reader's kernels (on the current stream) come after the last write and before the next one."""
        with self._lock:
            self._order.before_read()
            try:
                yield self
            finally:
                self._order.after_read()

    def scatter(self, write: MemoryWrite, synchronize: bool = False) -> int:
        """Apply one batch's write and return the new version.

        The write's ``nodes`` and ``mail_nodes`` must each be unique (see :func:`last_occurrence`).
        On a GPU the write's kernels wait (device-side) for the gathers launched before it. With
        ``synchronize`` (a writer thread on its own CUDA stream) the version advances only after
        the device has finished the write: the caller's thread waits for the write's own event
        (not for its whole stream).
        """
        write = write.to(self.device)
        with self._lock:
            self._order.before_write()
            rows = torch.cat([write.nodes, write.mail_nodes])  # a node may be in both (no unique: no host sync)
            if self._frames:
                self._frames[-1].append((rows, self.version.clone(), {n: getattr(self, n)[rows] for n in self._STATE}))
            self._written.append(rows)
            self.memory[write.nodes] = write.memory.to(self.memory.dtype)
            self.last_update[write.nodes] = write.last_update.to(torch.float64)
            slot = self.mail_count[write.mail_nodes] % self.mailbox_size
            self.mailbox[write.mail_nodes, slot] = write.mail.to(self.mailbox.dtype)
            self.mail_ts[write.mail_nodes, slot] = write.mail_ts.to(torch.float64)
            self.mail_count[write.mail_nodes] += 1
            self.version += 1
            written = self._order.after_write()
            if synchronize and written is not None:
                written.synchronize()
            self._version += 1
            self._lock.notify_all()
            version = self._version
        self._notify_watchers()
        return version

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Block until at least ``version`` writes are committed or ``timeout`` seconds pass.

        Returns:
            Whether the version was reached.
        """
        with self._lock:
            return self._lock.wait_for(lambda: self._version >= version, timeout=timeout)

    def watch_version(self, condition: threading.Condition) -> None:
        """Notify ``condition`` (``notify_all`` under its own lock) after every change of the version.

        The store keeps a weak reference: a watcher that is garbage-collected stops being
        notified. Notifications happen after the store's lock is released, so a watcher may
        hold its condition while it reads :attr:`current_version`.
        """
        self._watchers.add(condition)

    def _notify_watchers(self) -> None:
        for condition in list(self._watchers):
            with condition:
                condition.notify_all()

    # ------------------------------------------------------------------ reset and journal
    def reset(self) -> None:
        """Zero the state and the version and drop all journal frames; costs O(rows written since the last reset)."""
        with self._lock:
            self._order.before_write()
            if self._written:
                rows = torch.cat(self._written).unique()
                for name in self._STATE:
                    getattr(self, name)[rows] = 0
            self._written.clear()
            self._frames.clear()
            self.version.zero_()
            self._order.after_write()
            self._version = 0
            self._lock.notify_all()
        self._notify_watchers()

    def begin_journal(self) -> None:
        """Open a journal frame: later writes record their rows' pre-images so :meth:`rollback` can undo them.

        Frames nest: a write records into the innermost frame only.
        """
        with self._lock:
            self._frames.append([])

    @property
    def journal_depth(self) -> int:
        """Number of open journal frames."""
        return len(self._frames)

    def rollback(self) -> None:
        """Undo every write of the innermost frame, newest first, and close it."""
        with self._lock:
            if not self._frames:
                raise RuntimeError("MemoryStore.rollback: no journal frame is open; call begin_journal() first.")
            self._order.before_write()
            for rows, version, before in reversed(self._frames.pop()):
                for name, values in before.items():
                    getattr(self, name)[rows] = values
                self.version.copy_(version)
                self._version = int(version)
            self._order.after_write()
        self._notify_watchers()

    def journal_state(self) -> list[list[dict[str, Tensor]]]:
        """The open frames as plain tensors (for checkpoints)."""
        return [[{"rows": rows, "version": version, **before} for rows, version, before in frame] for frame in self._frames]

    def load_journal_state(self, frames: list[list[dict[str, Tensor]]]) -> None:
        """Restore frames saved by :meth:`journal_state`."""
        to = lambda x: x.to(self.device)  # noqa: E731
        self._frames = [
            [(to(e["rows"]), to(e["version"]), {n: to(e[n]) for n in self._STATE}) for e in frame] for frame in frames
        ]
