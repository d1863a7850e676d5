"""MSPipe's staleness-aware pipeline: the batch-source contract, lanes, gate, auto policy and the pipelined loader."""

from __future__ import annotations

from lightning_mspipe.pipeline.contract import BatchSource
from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout
from lightning_mspipe.pipeline.loader import PipelinedLoader
from lightning_mspipe.pipeline.profile import PipelineProfile
from lightning_mspipe.pipeline.schedule import StageTimes, auto_staleness, parse_max_staleness
from lightning_mspipe.pipeline.stages import fetch_memory

__all__ = [
    "BatchSource",
    "PipelineError",
    "PipelineProfile",
    "PipelineTimeout",
    "PipelinedLoader",
    "StageTimes",
    "auto_staleness",
    "fetch_memory",
    "parse_max_staleness",
]
