"""A rank's error, told to the other ranks: the first failure is kept in torch.distributed's key-value store.

When a rank raises, the other ranks are usually blocked in a collective (DDP's gradient
all-reduce, the memory all-gather). They leave it when the failed rank's process exits (its
connections close) or when the process group's timeout passes, with an error that does not
say why. The failed rank first records ``"rank r: Type: message"`` under one key of the store
that ``init_process_group`` created (compare-and-set: the first failure wins); every other rank,
when its own collective fails, reads it and adds it to its error.
"""

from __future__ import annotations

import logging

import torch.distributed as dist
from torch.distributed.distributed_c10d import _get_default_store  # the store init_process_group made

__all__ = ["FailureNotice"]

log = logging.getLogger(__name__)

KEY = "lightning_mspipe/first_failure"


class FailureNotice:
    """Records this rank's failure for the others, or explains this rank's failure by another rank's.

    Args:
        rank: This process's global rank.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def record_or_explain(self, exception: BaseException) -> str | None:
        """Record ``exception`` as the job's first failure, unless another rank failed first.

        Returns:
            The other rank's failure (``"rank r: Type: message"``) when it came first, else ``None``.
            The store may be gone (its host rank exited): then nothing is recorded and ``None`` is returned.
        """
        if not dist.is_initialized():
            return None
        mine = f"rank {self.rank}: {type(exception).__name__}: {exception}"
        try:
            store = _get_default_store()
            first = store.compare_set(KEY, "", mine).decode(errors="replace")
        except Exception as error:  # noqa: BLE001 - the store is best effort; the local error is raised anyway
            log.debug("FailureNotice: the store is unreachable (%s)", error)
            return None
        return None if first == mine else first
