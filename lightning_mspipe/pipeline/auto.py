"""``max_staleness="auto"``: the policy that picks the bound, and whether to pipeline at all, from measurements.

The loader measures; this policy decides. The first batch of each measurement phase is left
out of every estimate (it pays one-time costs: allocations, lazy initialisation, the thread's
start), and the inputs of every choice are kept, so a checkpoint carries them and a resumed
run keeps the choice.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning_mspipe.pipeline.schedule import StageTimes, auto_staleness

__all__ = ["AutoBound"]

log = logging.getLogger(__name__)

DISCARD = 1  # first batches of each measurement phase left out of the estimates


class AutoBound:
    """Chooses ``s`` with :func:`~lightning_mspipe.pipeline.schedule.auto_staleness` and inline vs pipelined.

    Args:
        maximum: Upper clamp of the bound (``max_auto_staleness``).
        warmup: Measured batches per phase (at most a quarter of an epoch, at least 2), after
            :data:`DISCARD` discarded ones.
        drift: Relative change of any stage time that triggers a re-estimate at an epoch start.
    """

    def __init__(self, maximum: int, warmup: int = 8, drift: float = 0.25) -> None:
        if maximum < 0:
            raise ValueError(f"AutoBound: max_auto_staleness must be ≥ 0, got {maximum}.")
        if warmup < 1:
            raise ValueError(f"AutoBound: warmup must be ≥ 1 batch, got {warmup}.")
        self.maximum, self.warmup, self.drift = maximum, warmup, drift
        self.bound = 0
        self.pipelined = False  # measure inline first
        self.decided = False
        self.choices: list[dict[str, Any]] = []
        self._inputs: dict[str, float] | None = None  # stage times of the last choice

    def phase_length(self, epoch_length: int) -> int:
        """Batches per measurement phase: the discarded ones plus ``warmup`` (short epochs decide in the first one)."""
        return DISCARD + max(2, min(self.warmup, epoch_length // 4))

    def choose_bound(self, times: StageTimes) -> int:
        """Set and return the bound for the measured ``times`` (after the inline phase)."""
        self.bound = auto_staleness(times, self.maximum)
        return self.bound

    def decide(self, times: StageTimes, inline_period: float, pipelined_period: float, pipelined_batches: int) -> None:
        """Keep the pipeline if it was faster; decide only once at least 2 pipelined batches were measured."""
        if pipelined_batches >= 2:
            self.pipelined = pipelined_period < inline_period
            self.decided = True
        self._record(times, inline_period=inline_period, pipelined_period=pipelined_period)

    def reestimate(self, times: StageTimes) -> bool:
        """At an epoch start: re-choose the bound if stage times drifted by more than ``drift``; return whether."""
        if not self.decided or self._inputs is None:
            return False
        now = times.as_dict()
        changed = max(abs(now[k] - v) / max(v, 1e-9) for k, v in self._inputs.items())
        if changed <= self.drift:
            return False
        self.choose_bound(times)
        self._record(times, reason=f"stage times drifted by {changed:.0%}")
        return True

    def _record(self, times: StageTimes, **extra: Any) -> None:
        self._inputs = times.as_dict()
        self.choices.append({"max_staleness": self.bound, "pipelined": self.pipelined, **self._inputs, **extra})
        log.info("MSPipe auto: max_staleness=%d, pipelined=%s, from stage times (s) %s; %s",
                 self.bound, self.pipelined, {k: round(v, 5) for k, v in self._inputs.items()}, extra)

    def state_dict(self) -> dict[str, Any]:
        """The choice, whether it is final, and its inputs (stage times and periods)."""
        return {"bound": self.bound, "pipelined": self.pipelined, "decided": self.decided,
                "choices": [dict(c) for c in self.choices], "inputs": self._inputs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep a checkpoint's choice; a bound above this run's ``maximum`` is clamped (and logged)."""
        self.pipelined, self.decided = bool(state["pipelined"]), bool(state["decided"])
        self.choices, self._inputs = [dict(c) for c in state["choices"]], state["inputs"]
        self.bound = min(int(state["bound"]), self.maximum)
        if self.bound != state["bound"]:
            log.warning("MSPipe auto: the checkpoint's bound %d is above max_auto_staleness=%d; using %d.",
                        state["bound"], self.maximum, self.bound)
