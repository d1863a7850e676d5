"""lightning-mspipe: memory-based temporal GNNs on PyTorch Lightning with MSPipe's staleness-aware pipeline."""

from __future__ import annotations

__version__ = "0.1.0"

from lightning_mspipe.callbacks import MemoryUpdate, PipelineStats, StalenessGuard, StalenessMitigation  # noqa: E402
from lightning_mspipe.strategy import MSPipeStrategy, register_strategies  # noqa: E402

register_strategies()

__all__ = [
    "MSPipeStrategy",
    "MemoryUpdate",
    "PipelineStats",
    "StalenessGuard",
    "StalenessMitigation",
    "__version__",
]
