"""lightning-mspipe: memory-based temporal GNNs on PyTorch Lightning with MSPipe's staleness-aware pipeline.

The public API: the models (:class:`TGN`, :class:`JODIE`, :class:`APAN`, the :class:`EdgeBank` baseline;
their plain networks :class:`TGNNetwork`, :class:`JODIENetwork`, :class:`APANNetwork` and :func:`fetch_memory`), the data
(:class:`TemporalDataModule`, :func:`load_events`, :func:`load_dataset`, :func:`synthetic_events`), the pipeline
strategy (:class:`MSPipeStrategy`, registered as ``"mspipe"``), its staleness mitigation and its callbacks.
"""

from __future__ import annotations

__version__ = "0.1.0"  # before the imports: lightning_mspipe.cli reads it

from lightning_mspipe.callbacks import PipelineStats, PipelineTimeline, StalenessGuard  # noqa: E402
from lightning_mspipe.data import TemporalDataModule, load_dataset, load_events, synthetic_events  # noqa: E402
from lightning_mspipe.distributed import MSPipeDDPStrategy
from lightning_mspipe.models import (  # noqa: E402
    APAN,
    JODIE,
    TGN,
    APANNetwork,
    EdgeBank,
    JODIENetwork,
    MemoryNetwork,
    TGNNetwork,
)
from lightning_mspipe.pipeline.stages import fetch_memory  # noqa: E402
from lightning_mspipe.staleness_mitigation import StalenessMitigation  # noqa: E402
from lightning_mspipe.strategy import MSPipeStrategy, register_strategies  # noqa: E402

register_strategies()

__all__ = [
    "APAN",
    "APANNetwork",
    "EdgeBank",
    "JODIE",
    "JODIENetwork",
    "MSPipeDDPStrategy",
    "MSPipeStrategy",
    "MemoryNetwork",
    "PipelineStats",
    "PipelineTimeline",
    "StalenessGuard",
    "StalenessMitigation",
    "TGN",
    "TGNNetwork",
    "TemporalDataModule",
    "__version__",
    "fetch_memory",
    "load_dataset",
    "load_events",
    "synthetic_events",
]
