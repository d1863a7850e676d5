"""The pipeline's exceptions, shared by its lanes, gate and loader."""

from __future__ import annotations

__all__ = ["PipelineError", "PipelineTimeout", "Stopped", "stage_failure"]


class PipelineError(RuntimeError):
    """A pipeline stage failed; the message names the stage and the batch."""


class PipelineTimeout(PipelineError):
    """A pipeline wait ran past its timeout; the message says what it waited for."""


class Stopped(Exception):
    """Internal: the consumer asked a lane to stop; the lane ends quietly."""


def stage_failure(stage: str, index: int, error: BaseException) -> PipelineError:
    """``error``, raised in ``stage`` of batch ``index``, as the :class:`PipelineError` that names
    both (caused by it); a :class:`PipelineError` (a timeout, an upstream lane's failure) keeps
    its type and message."""
    if isinstance(error, PipelineError):
        return error
    failure = PipelineError(f"MSPipe pipeline: stage '{stage}' failed on batch {index}: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure
