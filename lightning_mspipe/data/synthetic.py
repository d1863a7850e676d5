"""Seeded synthetic interaction streams: the built-in default data set."""

from __future__ import annotations

import numpy as np
import torch

from lightning_mspipe.data.events import EventStream

__all__ = ["synthetic_events"]


def synthetic_events(
    num_nodes: int = 1000,
    num_events: int = 30_000,
    edge_dim: int = 0,
    seed: int = 0,
    *,
    num_partners: int = 4,
    repeat_prob: float = 0.8,
    mean_session: float = 4.0,
    activity_skew: float = 1.2,
) -> EventStream:
    """A seeded interaction stream with temporal structure that a memory-based model can learn.

    Nodes ``0 … num_nodes//2 − 1`` are sources ("users"), the rest destinations ("items"). Each
    source has ``num_partners`` favourite destinations. Events come in bursty sessions: a source
    is drawn with Zipf-like activity, then emits a geometric number of events seconds apart
    (sessions themselves are hours apart). Each event goes to one of the source's partners with
    probability ``repeat_prob`` (recurring partners), else to a uniformly random destination.
    Edge features, when asked for, carry a noisy code of the destination's partner slot.

    Because destinations recur per source, a model that remembers each node's past
    interactions ranks true destinations far above random ones.

    Args:
        num_nodes: Number of nodes ``N`` (≥ 4).
        num_events: Number of events ``E`` (≥ 1).
        edge_dim: Width of the edge features (0: none).
        seed: Seed of the generator; the same arguments give the same stream.
        num_partners: Favourite destinations per source.
        repeat_prob: Probability that an event goes to a favourite destination.
        mean_session: Mean number of events per session.
        activity_skew: Zipf exponent of source activity (larger: a few very active sources).

    Returns:
        An :class:`EventStream` named ``"synthetic"`` with ``edge_feat`` ``[E, edge_dim]`` (or
        ``None``) and ``label`` ``[E]`` (1 when the event goes to a favourite partner).

    Raises:
        ValueError: on sizes or probabilities out of range.
    """
    if num_nodes < 4:
        raise ValueError(f"synthetic_events: num_nodes must be ≥ 4, got {num_nodes}.")
    if num_events < 1:
        raise ValueError(f"synthetic_events: num_events must be ≥ 1, got {num_events}.")
    if edge_dim < 0:
        raise ValueError(f"synthetic_events: edge_dim must be ≥ 0, got {edge_dim}.")
    if not 0.0 <= repeat_prob <= 1.0:
        raise ValueError(f"synthetic_events: repeat_prob must be in [0, 1], got {repeat_prob}.")
    if mean_session < 1.0:
        raise ValueError(f"synthetic_events: mean_session must be ≥ 1, got {mean_session}.")

    rng = np.random.default_rng(seed)
    num_src = num_nodes // 2
    num_dst = num_nodes - num_src

    # Sessions: Zipf-like source activity, geometric lengths, long gaps between sessions.
    activity = 1.0 / np.arange(1, num_src + 1) ** activity_skew
    activity = rng.permutation(activity / activity.sum())
    max_sessions = num_events  # every session has ≥ 1 event
    lengths = rng.geometric(1.0 / mean_session, size=max_sessions)
    num_sessions = int(np.searchsorted(np.cumsum(lengths), num_events)) + 1
    lengths = lengths[:num_sessions]
    lengths[-1] -= lengths.sum() - num_events
    session_src = rng.choice(num_src, size=num_sessions, p=activity)
    src = np.repeat(session_src, lengths)

    session_start = np.cumsum(rng.exponential(3600.0, size=num_sessions))
    within = rng.exponential(30.0, size=num_events)
    session_of_event = np.repeat(np.arange(num_sessions), lengths)
    first_of_session = np.cumsum(lengths) - lengths
    offset = np.cumsum(within) - np.repeat(np.cumsum(within)[first_of_session] - within[first_of_session], lengths)
    t = np.floor(session_start[session_of_event] + offset)
    order = np.argsort(t, kind="stable")

    # Destinations: favourite partners with probability repeat_prob, else uniform.
    partners = rng.integers(0, num_dst, size=(num_src, num_partners))
    slot = rng.integers(0, num_partners, size=num_events)
    favourite = rng.random(num_events) < repeat_prob
    dst = np.where(favourite, partners[src, slot], rng.integers(0, num_dst, size=num_events)) + num_src

    edge_feat = None
    if edge_dim:
        codes = rng.standard_normal((num_partners, edge_dim)).astype(np.float32)
        noise = rng.standard_normal((num_events, edge_dim)).astype(np.float32)
        edge_feat = np.where(favourite[:, None], codes[slot], 0.0) + 0.5 * noise
        edge_feat = torch.from_numpy(edge_feat[order].astype(np.float32))

    return EventStream(
        src=torch.from_numpy(src[order]),
        dst=torch.from_numpy(dst[order]),
        t=torch.from_numpy(t[order]),
        edge_feat=edge_feat,
        label=torch.from_numpy(favourite[order].astype(np.int64)),
        num_nodes=num_nodes,
        name="synthetic",
    )
