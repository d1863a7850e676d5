"""Event streams, readers, the synthetic stream, the temporal graph sampler and the data module."""

from __future__ import annotations

from lightning_mspipe.data.batch import NeighborBlock, TemporalBatch
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.data.events import EventStream, EventStreamError
from lightning_mspipe.data.formats import load_events
from lightning_mspipe.data.graph import TemporalGraph
from lightning_mspipe.data.synthetic import synthetic_events

__all__ = [
    "EventStream",
    "EventStreamError",
    "NeighborBlock",
    "TemporalBatch",
    "TemporalDataModule",
    "TemporalGraph",
    "load_events",
    "synthetic_events",
]
