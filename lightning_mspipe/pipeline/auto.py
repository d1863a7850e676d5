"""``max_staleness="auto"``: the policy that picks the bound, and whether to pipeline at all, from measurements.

The loader measures; this policy decides. The first batch of each measurement phase is left
out of every estimate (it pays one-time costs: allocations, lazy initialisation, the threads'
start), and the inputs of every choice are kept, so a checkpoint carries them and a resumed
run keeps the choice. When the stage times drift (compared with those of the first epoch
after the choice, measured in the chosen mode: the few batches of a measurement phase are too
noisy a reference, and the lanes' own cost on a CPU must not be mistaken for drift), the
policy is undecided again: the loader measures inline and pipelined once more, and both the
bound and the mode are chosen anew.
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
        margin: How much faster per batch the pipelined phase must be to be kept (a share of the
            inline period). The phases are a few batches each; on a CPU, where the lanes compete
            with the step for cores, a gain of a few percent in them is noise and often turns into a
            loss over a whole epoch (JODIE on Wikipedia on 2 cores: 2% faster in the phases, 10%
            slower over the epoch), so a near tie goes to inline.
    """

    def __init__(self, maximum: int, warmup: int = 8, drift: float = 0.25, margin: float = 0.03) -> None:
        if maximum < 0:
            raise ValueError(f"AutoBound: max_auto_staleness must be ≥ 0, got {maximum}.")
        if warmup < 1:
            raise ValueError(f"AutoBound: warmup must be ≥ 1 batch, got {warmup}.")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"AutoBound: margin must be in [0, 1), got {margin}.")
        self.maximum, self.warmup, self.drift, self.margin = maximum, warmup, drift, margin
        self.bound = 0
        self.pipelined = False  # measure inline first
        self.decided = False
        self.choices: list[dict[str, Any]] = []
        self._inputs: dict[str, float] | None = None  # stage times of the last choice
        self._reference: dict[str, float] | None = None  # stage times of the first epoch in the chosen mode

    def phase_length(self, epoch_length: int) -> int:
        """Batches per measurement phase: the discarded ones plus ``warmup`` (short epochs decide in the first one)."""
        return DISCARD + max(2, min(self.warmup, epoch_length // 4))

    def choose_bound(self, times: StageTimes) -> int:
        """Set and return the bound for the measured ``times`` (after the inline phase)."""
        self.bound = auto_staleness(times, self.maximum)
        return self.bound

    def decide(self, times: StageTimes, inline_period: float, pipelined_period: float, pipelined_batches: int,
               inline_phases: tuple[float, ...] = ()) -> None:
        """Keep the pipeline if it was faster by more than ``margin``; decide only once at least 2
        pipelined batches were measured.

        Args:
            times: Stage times of the inline phase (the bound was chosen from them).
            inline_period, pipelined_period: Seconds per batch of each mode (the loader passes the
                faster of the two inline phases that bracket the pipelined one).
            pipelined_batches: Batches measured in the pipelined phase.
            inline_phases: The period of each inline phase ``inline_period`` came from (recorded with the choice).
        """
        if pipelined_batches >= 2:
            self.pipelined = pipelined_period < inline_period * (1.0 - self.margin)
            self.decided = True
            self._reference = None  # the next epoch start takes the chosen mode's times as the reference
        extra = {"inline_phase_periods": list(inline_phases)} if inline_phases else {}
        self._record(times, inline_period=inline_period, pipelined_period=pipelined_period, **extra)

    def reestimate(self, times: StageTimes) -> bool:
        """At an epoch start, with the last epoch's stage ``times``: the first time after a choice, keep
        them as the reference; later, if they drifted by more than ``drift`` from it, become undecided
        (the loader measures inline and pipelined again). Return whether it became undecided."""
        if not self.decided:
            return False
        now = times.as_dict()
        if self._reference is None:
            self._reference = now
            return False
        changed = max(abs(now[k] - v) / max(v, 1e-9) for k, v in self._reference.items())
        if changed <= self.drift:
            return False
        self.decided, self.pipelined = False, False  # measure inline first, then pipelined
        self._record(times, reason=f"stage times drifted by {changed:.0%}: measuring inline and pipelined again")
        return True

    def _record(self, times: StageTimes, **extra: Any) -> None:
        self._inputs = times.as_dict()
        self.choices.append({"max_staleness": self.bound, "pipelined": self.pipelined, **self._inputs, **extra})
        log.info("MSPipe auto: max_staleness=%d, pipelined=%s, from stage times (s) %s; %s",
                 self.bound, self.pipelined, {k: round(v, 5) for k, v in self._inputs.items()}, extra)

    def state_dict(self) -> dict[str, Any]:
        """The choice, whether it is final, and its inputs (stage times and periods)."""
        return {"bound": self.bound, "pipelined": self.pipelined, "decided": self.decided,
                "choices": [dict(c) for c in self.choices], "inputs": self._inputs, "reference": self._reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep a checkpoint's choice; a bound above this run's ``maximum`` is clamped (and logged)."""
        self.pipelined, self.decided = bool(state["pipelined"]), bool(state["decided"])
        self.choices, self._inputs = [dict(c) for c in state["choices"]], state["inputs"]
        self._reference = state.get("reference")  # earlier checkpoints: the next epoch start sets it
        self.bound = min(int(state["bound"]), self.maximum)
        if self.bound != state["bound"]:
            log.warning("MSPipe auto: the checkpoint's bound %d is above max_auto_staleness=%d; using %d.",
                        state["bound"], self.maximum, self.bound)
