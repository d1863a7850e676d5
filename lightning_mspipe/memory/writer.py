"""Stage 5's seam: where a training step's memory write goes.

A :class:`~lightning_mspipe.models.base.MemoryTGNN` hands the write of every training batch to
its :class:`MemoryWriter` at the end of its training step, and flushes the writer before an
epoch ends, before validation and when training ends. Without a pipeline the writer is a
:class:`DirectWriter`, which applies each write at once (plain Lightning training). A strategy
that runs stage 5 elsewhere hands the model its own writer with
:meth:`~lightning_mspipe.models.base.MemoryTGNN.use_memory_writer`
(:class:`~lightning_mspipe.strategy.MSPipeStrategy` hands it its
:class:`~lightning_mspipe.pipeline.loader.PipelinedLoader`, whose writer lane commits writes in
batch order off the training thread) and takes it back at teardown.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lightning_mspipe.memory.store import MemoryStore, MemoryWrite

__all__ = ["DirectWriter", "MemoryWriter"]


@runtime_checkable
class MemoryWriter(Protocol):
    """Receives each training batch's memory write, in batch order."""

    def submit_write(self, index: int, write: MemoryWrite) -> None:
        """Take the write of batch ``index``; it may be committed later, but in submission order."""

    def flush_writes(self) -> None:
        """Block until every submitted write is committed (each wait with a timeout that says what it waited for)."""


class DirectWriter:
    """Applies each write to ``store`` at once, in the training thread (training without a pipeline)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def submit_write(self, index: int, write: MemoryWrite) -> None:
        self.store.scatter(write)

    def flush_writes(self) -> None:
        """Nothing is pending: every write was applied when it was submitted."""
