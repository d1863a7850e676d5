"""The staleness bound: validation of ``max_staleness`` and the bound chosen from stage times."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["StageTimes", "auto_staleness", "check_mode", "parse_max_staleness", "MODES"]

MODES = ("bounded", "exact", "sequential")
"""Pipeline modes: ``"bounded"`` (freshest memory within the bound), ``"exact"`` (batch ``j`` reads
version ``j − s``: timing-independent) and ``"sequential"`` (no lanes: every stage on the training
thread, one batch at a time; the baseline the pipeline is measured against)."""


def parse_max_staleness(value: int | str) -> int | str:
    """Return ``value`` if it is a non-negative int or ``"auto"``; raise a clear error otherwise."""
    if isinstance(value, str):
        if value == "auto":
            return value
        if value.strip().isdigit():  # from a CLI or YAML string
            return int(value)
        raise ValueError(f"max_staleness must be a non-negative int or 'auto', got {value!r}.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_staleness must be a non-negative int or 'auto', got {type(value).__name__} {value!r}.")
    if value < 0:
        raise ValueError(f"max_staleness must be ≥ 0 (0 is synchronous training), got {value}.")
    return value


def check_mode(owner: str, mode: str, max_staleness: int | str) -> None:
    """Raise a clear ``ValueError`` naming ``owner`` if ``mode`` is unknown or does not go with ``max_staleness``
    (already parsed by :func:`parse_max_staleness`): ``"exact"`` needs an int, ``"sequential"`` needs ``0``."""
    if mode not in MODES:
        raise ValueError(f"{owner}: unknown mode {mode!r}; choose one of {MODES}.")
    if mode == "exact" and max_staleness == "auto":
        raise ValueError(f"{owner}: mode='exact' needs a fixed max_staleness (an int), not 'auto'.")
    if mode == "sequential" and max_staleness != 0:
        raise ValueError(
            f"{owner}: mode='sequential' runs every stage on the training thread, one batch at a time, so its "
            f"memory is never stale: it needs max_staleness=0, got {max_staleness!r}."
        )


@dataclass
class StageTimes:
    """Mean seconds per batch of the five stages: sample, fetch features, fetch memory, train, write memory."""

    sample: float
    features: float
    memory: float
    train: float
    write: float

    def as_dict(self) -> dict[str, float]:
        return {"sample": self.sample, "features": self.features, "memory": self.memory, "train": self.train,
                "write": self.write}

    @property
    def period(self) -> float:
        """``P = max(τ1, τ2 + τ3, τ4, τ5)``: stages 2 and 3 share the host-to-device link, so they add."""
        return max(self.sample, self.features + self.memory, self.train, self.write)

    @property
    def sequential(self) -> float:
        """Time of one iteration with no overlap: ``τ1 + … + τ5``."""
        return self.sample + self.features + self.memory + self.train + self.write


def auto_staleness(times: StageTimes, maximum: int) -> int:
    """The smallest bound at which training never waits for memory: ``⌈(τ3 + τ4 + τ5) / P⌉ − 1``.

    A memory fetch of batch ``j`` must wait for the write of batch ``j − s − 1``; between that
    write and the start of batch ``j``'s training there are ``s + 1`` periods ``P`` in steady
    state, which must cover the fetch, the training step and the write.

    Args:
        times: Mean stage times.
        maximum: Upper clamp (``max_auto_staleness``).
    """
    if times.period <= 0:
        return 0
    bound = math.ceil((times.memory + times.train + times.write) / times.period) - 1
    return int(min(max(bound, 0), maximum))
