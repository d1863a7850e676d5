"""lightning-mspipe: memory-based temporal GNNs on PyTorch Lightning with MSPipe's staleness-aware pipeline."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
