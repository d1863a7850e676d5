"""Event streams, readers, the temporal graph sampler and the data module."""

from __future__ import annotations

from lightning_mspipe.data.batch import NeighborBlock, TemporalBatch
from lightning_mspipe.data.events import EventStream, EventStreamError
from lightning_mspipe.data.formats import load_events
from lightning_mspipe.data.graph import TemporalGraph

__all__ = [
    "EventStream",
    "EventStreamError",
    "NeighborBlock",
    "TemporalBatch",
    "TemporalGraph",
    "load_events",
]
