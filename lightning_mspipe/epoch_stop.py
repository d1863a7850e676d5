"""Training epochs that stop before their last batch (``max_steps``, ``max_time``, ``trainer.should_stop``).

When a fit stops in the middle of an epoch, Lightning still ends that epoch: the fit loop runs
``on_train_epoch_end`` and counts the epoch as processed and completed. A checkpoint written
afterwards (``trainer.save_checkpoint(path)`` once ``fit`` returns, or a ``ModelCheckpoint``
at that epoch end) therefore says "epoch finished", and a resume starts the *next* epoch:
the rest of the stopped epoch is skipped, the loader's saved position is not even loaded, and
the memory is reset. For a memory-based TGNN an epoch is one pass over the stream, so that
resume trains a different model (memory, mail times and the memory version all differ).

:func:`epoch_stopped_early` tells whether the epoch that just ran was cut short;
:func:`mark_epoch_unfinished` rewrites a checkpoint's loop state so that Lightning resumes
the cut epoch mid-way (its "restarted mid-epoch" path), exactly as from a checkpoint written
during the epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L

__all__ = ["epoch_stopped_early", "mark_epoch_unfinished"]

_COUNTERS = ("processed", "completed")


def epoch_stopped_early(trainer: L.Trainer) -> bool:
    """Whether the last training epoch ended before its last batch (fit stopped by steps, time or a callback).

    False while no fit has run, and for an epoch that reached its last batch (also when
    ``limit_train_batches`` shortened it: that is the whole epoch).
    """
    if trainer.state.fn != "fit" or trainer.sanity_checking:
        return False
    batches = trainer.fit_loop.epoch_loop.batch_progress
    if batches.is_last_batch or batches.current.ready == 0:
        return False
    return batches.current.ready < trainer.num_training_batches


def mark_epoch_unfinished(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """If the epoch stopped early and Lightning counted it done, mark it unfinished in ``checkpoint``.

    The epoch's ``processed`` and ``completed`` counters (total and current) go back by one, so
    they equal those of a checkpoint written after a training batch of that epoch; the
    ``epoch`` entry becomes the stopped epoch. Batch counters and the loader state already
    point at the next batch. Does nothing for a checkpoint written during the epoch.

    Args:
        trainer: The trainer that wrote ``checkpoint``.
        checkpoint: The checkpoint dict (``on_save_checkpoint``), changed in place.
    """
    if not epoch_stopped_early(trainer):
        return
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress")
    if progress is None:
        return
    for scope in ("total", "current"):
        counts = progress[scope]
        if counts["processed"] == counts["started"]:  # Lightning ran the epoch's end
            for counter in _COUNTERS:
                counts[counter] = counts["started"] - 1
    checkpoint["epoch"] = progress["current"]["started"] - 1
