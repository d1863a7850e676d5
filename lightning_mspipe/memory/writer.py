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

Readers of the live store during training (staleness mitigation) ask the writer for it
(:meth:`MemoryWriter.live_memory`): only the writer knows which writes are committed.
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

    def live_memory(self, index: int) -> MemoryStore:
        """The store for a reader of live memory during the step of batch ``index``.

        A writer whose commits depend on timing returns it once the writes a timing-independent
        run needs are committed (``exact`` mode: those of every batch before ``index``), or as it
        is (``bounded`` mode: whatever is committed).
        """


class DirectWriter:
    """Applies each write to ``store`` at once, in the training thread (training without a pipeline)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def submit_write(self, index: int, write: MemoryWrite) -> None:
        self.store.scatter(write)

    def flush_writes(self) -> None:
        """Nothing is pending: every write was applied when it was submitted."""

    def live_memory(self, index: int) -> MemoryStore:
        """The store: every write submitted so far is applied."""
        return self.store
