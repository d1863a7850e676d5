"""The pipeline's exceptions, shared by its lanes, gate and loader."""

from __future__ import annotations

__all__ = ["PipelineError", "PipelineTimeout", "Stopped"]


class PipelineError(RuntimeError):
    """A pipeline stage failed; the message names the stage and the batch."""


class PipelineTimeout(PipelineError):
    """A pipeline wait ran past its timeout; the message says what it waited for."""


class Stopped(Exception):
    """Internal: the consumer asked a lane to stop; the lane ends quietly."""
