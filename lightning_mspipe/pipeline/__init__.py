"""MSPipe's staleness-aware pipeline: stages, schedule and the pipelined loader."""

from __future__ import annotations

from lightning_mspipe.pipeline.stages import fetch_memory

__all__ = ["fetch_memory"]
