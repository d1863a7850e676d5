"""MemoryPhases: which events the memory has seen across training, validation, test and the sanity check."""

from __future__ import annotations

from typing import Any, Callable

from lightning_mspipe.memory.store import MemoryStore

__all__ = ["MemoryPhases"]

TRAIN, VAL, TEST = "train", "val", "test"


class MemoryPhases:
    """Keeps the memory at the right point of the stream for each stage of the standard protocol.

    Training starts every epoch from reset memory. Validation continues from the memory after
    training; test continues from the memory after validation. Each evaluation phase opens a
    journal frame on the store, so it can be undone in O(touched rows):

    - the sanity check's validation is undone when it ends (it must not change memory), and so
      is a validation in the middle of a training epoch (``val_check_interval < 1``);
    - a second validation (``trainer.validate`` after ``fit``) first undoes the first one, so
      validation events are never applied twice;
    - a test when the memory has not seen validation first replays the validation events
      (``replay_validation``), and a second test undoes the first.

    ``position`` is the last phase whose events the memory holds: ``"train"``, ``"val"`` or ``"test"``.
    """

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.position = TRAIN
        self._in_sanity_check = False

    def start_training_epoch(self) -> None:
        """Reset memory for a new epoch (O(rows written since the last reset))."""
        self.store.reset()
        self.position = TRAIN

    def start_validation(self, sanity_check: bool) -> None:
        """Rewind to the end of training and open the validation frame."""
        self._in_sanity_check = sanity_check
        if not sanity_check:
            self._rewind_to(TRAIN)
            self.position = VAL
        self.store.begin_journal()

    def end_validation(self, training_continues: bool = False) -> None:
        """Undo the sanity check's writes, and a mid-epoch validation's (``training_continues``:
        training goes on from the memory it had, exactly as without the validation); a
        validation at the end of training keeps its frame open for the test."""
        if self._in_sanity_check or training_continues:
            self.store.rollback()
            if not self._in_sanity_check:
                self.position = TRAIN
            self._in_sanity_check = False

    def start_test(self, replay_validation: Callable[[], None]) -> None:
        """Rewind to the end of validation (replaying it if memory never saw it) and open the test frame."""
        if self.position == TEST:
            self._rewind_to(VAL)
        if self.position == TRAIN:
            self.store.begin_journal()
            replay_validation()
            self.position = VAL
        self.store.begin_journal()
        self.position = TEST

    def _rewind_to(self, phase: str) -> None:
        depth = {TRAIN: 0, VAL: 1, TEST: 2}[phase]
        while self.store.journal_depth > depth:
            self.store.rollback()
        if self.store.journal_depth < depth:  # memory of a checkpoint written without frames
            raise RuntimeError(f"MemoryPhases: cannot rewind memory to the end of {phase!r}; its journal is missing.")
        self.position = phase

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "frames": self.store.journal_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = state["position"]
        self.store.load_journal_state(state["frames"])
