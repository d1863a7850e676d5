"""What the pipeline needs from a batch source: the seam between ``data/`` and ``pipeline/``.

:class:`~lightning_mspipe.data.loader.TemporalBatchLoader` implements it. A training loader
that does not (a plain ``DataLoader``, for example) cannot be pipelined: the strategy then
trains on it sequentially and says why.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lightning_mspipe.data.batch import TemporalBatch

__all__ = ["BatchSource", "missing_members"]


@runtime_checkable
class BatchSource(Protocol):
    """A sized, chronological, stateful source of :class:`TemporalBatch` es, one stage at a time.

    Batches are addressed by index within an epoch; stage 1 and stage 2 of any batch may run in
    another thread and in any order relative to training, so a batch must not depend on which
    thread prepares it or when (seed its random draws by epoch and index).
    """

    def __len__(self) -> int:
        """Batches per epoch."""

    def sample(self, index: int) -> TemporalBatch:
        """Stage 1: the events, negatives and sampled temporal neighbours of batch ``index``."""

    def fetch_features(self, batch: TemporalBatch) -> TemporalBatch:
        """Stage 2: gather the features of the batch's events and of its neighbours' events."""

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next epoch's random draws (the trainer's epoch counter)."""

    def start_epoch(self) -> int:
        """Begin an epoch (or continue a restored one) and return its first batch index."""

    def advance(self, index: int) -> None:
        """Record that batch ``index`` was handed to training (the position checkpoints save)."""

    def state_dict(self) -> dict[str, Any]:
        """The position to resume from."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a position saved by :meth:`state_dict`."""


_MEMBERS = ("__len__", "sample", "fetch_features", "set_epoch", "start_epoch", "advance", "state_dict", "load_state_dict")


def missing_members(source: object) -> list[str]:
    """The :class:`BatchSource` methods ``source`` lacks (empty when it implements the protocol)."""
    return [name for name in _MEMBERS if not callable(getattr(source, name, None))]
