"""MSPipe's staleness-aware pipeline: stages, schedule, profile and the pipelined loader."""

from __future__ import annotations

from lightning_mspipe.pipeline.loader import PipelineError, PipelinedLoader, PipelineTimeout
from lightning_mspipe.pipeline.profile import PipelineProfile
from lightning_mspipe.pipeline.schedule import StageTimes, auto_staleness, parse_max_staleness
from lightning_mspipe.pipeline.stages import fetch_memory

__all__ = [
    "PipelineError",
    "PipelineProfile",
    "PipelineTimeout",
    "PipelinedLoader",
    "StageTimes",
    "auto_staleness",
    "fetch_memory",
    "parse_max_staleness",
]
