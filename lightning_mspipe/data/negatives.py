"""Negative destinations: random for training, fixed and seeded for evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DestinationSampler", "fixed_negatives", "batch_generator"]


def batch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and integer ``keys`` (for example epoch and batch index).

    Seeding per batch makes every batch's random draws a pure function of its position, so the
    pipeline may prepare batches in any thread and a resumed run draws the same numbers.
    """
    mixed = seed & 0xFFFFFFFF
    for key in keys:  # a few integer mixes per batch, not per event
        mixed = (mixed * 6364136223846793005 + 1442695040888963407 + int(key)) % (1 << 63)
    generator = torch.Generator()
    generator.manual_seed(mixed)
    return generator


class DestinationSampler:
    """Draws negative destinations from a pool of candidate nodes.

    Args:
        candidates: Candidate destination nodes (for example all nodes, or the destinations
            seen in training).

    Shapes:
        - candidates: ``[C]`` int64, C ≥ 2
    """

    def __init__(self, candidates: Tensor) -> None:
        candidates = torch.as_tensor(candidates, dtype=torch.int64).unique()
        if candidates.numel() < 2:
            raise ValueError(
                f"DestinationSampler: needs at least 2 candidate destinations, got {candidates.numel()}."
            )
        self.candidates = candidates

    def sample(self, dst: Tensor, q: int, generator: torch.Generator, exclude_true: bool = False) -> Tensor:
        """Draw ``q`` negatives per positive, uniformly from the candidates.

        Args:
            dst: True destinations.
            q: Negatives per positive (≥ 1).
            generator: Source of randomness.
            exclude_true: Replace a draw that equals the true destination by the next candidate,
                so that no negative is the positive (TGB's rule for one-vs-many ranking).

        Returns:
            Negatives ``[B, q]`` int64.

        Shapes:
            - dst: ``[B]``
        """
        if q < 1:
            raise ValueError(f"DestinationSampler.sample: q must be ≥ 1, got {q}.")
        pick = torch.randint(0, self.candidates.numel(), (dst.numel(), q), generator=generator)
        neg = self.candidates[pick]
        if exclude_true:
            clash = neg == dst.unsqueeze(1)
            neg = torch.where(clash, self.candidates[(pick + 1) % self.candidates.numel()], neg)
        return neg


def fixed_negatives(dst: Tensor, q: int, candidates: Tensor, seed: int) -> Tensor:
    """Fixed evaluation negatives: the same ``[E, q]`` table in every run for the same seed.

    Every positive gets ``q`` negatives drawn uniformly from ``candidates``, never equal to its
    true destination. Column 0 serves one-negative metrics (AP, AUROC); all ``q`` columns serve
    one-vs-many ranking (MRR).

    Shapes:
        - dst: ``[E]`` int64; candidates: ``[C]``; returns ``[E, q]`` int64
    """
    return DestinationSampler(candidates).sample(dst, q, batch_generator(seed, 0xE7A1), exclude_true=True)
