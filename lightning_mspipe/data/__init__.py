"""Event streams, readers, public data sets by name (TGB's through py-tgb), the synthetic stream, the temporal graph sampler and the data module."""

from __future__ import annotations

from lightning_mspipe.data.batch import NeighborBlock, TemporalBatch
from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.data.events import EventStream, EventStreamError
from lightning_mspipe.data.formats import load_events
from lightning_mspipe.data.graph import TemporalGraph
from lightning_mspipe.data.checksums import ChecksumError
from lightning_mspipe.data.registry import DATASETS, DataSet, DataSetUnavailableError, load_dataset
from lightning_mspipe.data.synthetic import synthetic_events
from lightning_mspipe.data.tgb import load_tgb

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataSet",
    "DataSetUnavailableError",
    "EventStream",
    "EventStreamError",
    "NeighborBlock",
    "TemporalBatch",
    "TemporalDataModule",
    "TemporalGraph",
    "load_dataset",
    "load_events",
    "load_tgb",
    "synthetic_events",
]
