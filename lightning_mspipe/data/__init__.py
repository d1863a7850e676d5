"""Event streams, readers, the temporal graph sampler and the data module."""

from __future__ import annotations

from lightning_mspipe.data.batch import NeighborBlock, TemporalBatch
from lightning_mspipe.data.events import EventStream, EventStreamError

__all__ = ["EventStream", "EventStreamError", "NeighborBlock", "TemporalBatch"]
