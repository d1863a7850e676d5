"""Seeded synthetic interaction streams: the built-in default data set."""

from __future__ import annotations

from typing import Callable

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
    num_communities: int = 8,
    num_partners: int = 3,
    repeat_prob: float = 0.4,
    community_prob: float = 0.5,
    drift_prob: float = 0.05,
    mean_session: float = 4.0,
    activity_skew: float = 1.2,
) -> EventStream:
    """A seeded interaction stream with temporal structure that a memory-based model can learn.

    Nodes ``0 … num_nodes//2 − 1`` are sources ("users"), the rest destinations ("items"); the
    items fall into ``num_communities`` communities. Each source belongs to one community and
    keeps ``num_partners`` favourite items of it. Three kinds of structure:

    - **bursts**: events come in sessions: a source is drawn with Zipf-like activity, then emits
      a geometric number of events seconds apart; sessions are about an hour apart;
    - **recurring partners**: an event goes to a favourite partner with probability
      ``repeat_prob``, to a random item of the source's community with ``community_prob``, and
      to a uniformly random item otherwise;
    - **drifting communities**: at the start of each of its sessions a source moves to a random
      community with probability ``drift_prob`` and picks new favourites there.

    Recurring partners reward memory of past pairs (EdgeBank's one signal); community structure
    and drift reward a model that learns which items go together and follows change, so a
    memory-based model beats EdgeBank on it by a wide margin.

    Args:
        num_nodes: Number of nodes ``N`` (≥ 4).
        num_events: Number of events ``E`` (≥ 1).
        edge_dim: Width of the edge features (0: none): a noisy code of the event's community.
        seed: Seed of the generator; the same arguments give the same stream.
        num_communities: Communities of items (≥ 1, at most the number of items).
        num_partners: Favourite items per source (≥ 1).
        repeat_prob: Probability that an event goes to a favourite item.
        community_prob: Probability that it goes to a random item of the source's community.
        drift_prob: Probability that a session starts in a new community.
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
    for name, p in (("repeat_prob", repeat_prob), ("community_prob", community_prob), ("drift_prob", drift_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"synthetic_events: {name} must be in [0, 1], got {p}.")
    if repeat_prob + community_prob > 1.0:
        raise ValueError(
            f"synthetic_events: repeat_prob + community_prob must be ≤ 1, got {repeat_prob} + {community_prob}."
        )
    if mean_session < 1.0:
        raise ValueError(f"synthetic_events: mean_session must be ≥ 1, got {mean_session}.")
    num_src = num_nodes // 2
    num_dst = num_nodes - num_src
    if not 1 <= num_communities <= num_dst or num_partners < 1:
        raise ValueError(
            f"synthetic_events: need 1 ≤ num_communities ≤ {num_dst} (the number of items) and num_partners ≥ 1, "
            f"got num_communities={num_communities}, num_partners={num_partners}."
        )

    rng = np.random.default_rng(seed)
    lengths, session_src = _sessions(rng, num_src, num_events, mean_session, activity_skew)
    src = np.repeat(session_src, lengths)
    t = _session_times(rng, lengths, num_events)

    # Items of each community; each session's community and favourites (they change on drift).
    item_community = rng.permutation(np.arange(num_dst) % num_communities)
    draw_members = _member_sampler(rng, [np.flatnonzero(item_community == c) for c in range(num_communities)])
    session_community, session_partners = _drifting_communities(
        rng, session_src, num_src, num_communities, draw_members, num_partners, drift_prob
    )

    session_of_event = np.repeat(np.arange(lengths.size), lengths)
    community = session_community[session_of_event]
    draw = rng.random(num_events)
    favourite = draw < repeat_prob
    in_community = ~favourite & (draw < repeat_prob + community_prob)
    slot = rng.integers(0, num_partners, size=num_events)
    community_item = draw_members(community, 1)[:, 0]
    dst = rng.integers(0, num_dst, size=num_events)
    dst = np.where(favourite, session_partners[session_of_event, slot], dst)
    dst = np.where(in_community, community_item, dst) + num_src
    order = np.argsort(t, kind="stable")

    edge_feat = None
    if edge_dim:
        codes = rng.standard_normal((num_communities, edge_dim)).astype(np.float32)
        noise = rng.standard_normal((num_events, edge_dim)).astype(np.float32)
        edge_feat = codes[item_community[dst - num_src]] + 0.5 * noise
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


def _sessions(
    rng: np.random.Generator, num_src: int, num_events: int, mean_session: float, activity_skew: float
) -> tuple[np.ndarray, np.ndarray]:
    """Geometric session lengths summing to ``num_events`` and each session's source (Zipf-like activity)."""
    activity = 1.0 / np.arange(1, num_src + 1) ** activity_skew
    activity = rng.permutation(activity / activity.sum())
    lengths = rng.geometric(1.0 / mean_session, size=num_events)  # every session has ≥ 1 event
    num_sessions = int(np.searchsorted(np.cumsum(lengths), num_events)) + 1
    lengths = lengths[:num_sessions]
    lengths[-1] -= lengths.sum() - num_events
    return lengths, rng.choice(num_src, size=num_sessions, p=activity)


def _session_times(rng: np.random.Generator, lengths: np.ndarray, num_events: int) -> np.ndarray:
    """Whole-second event times: sessions about an hour apart, events about 30 s apart inside one."""
    session_start = np.cumsum(rng.exponential(3600.0, size=lengths.size))
    within = rng.exponential(30.0, size=num_events)
    first_of_session = np.cumsum(lengths) - lengths
    gaps = np.cumsum(within)
    offset = gaps - np.repeat(gaps[first_of_session] - within[first_of_session], lengths)
    return np.floor(np.repeat(session_start, lengths) + offset)


def _member_sampler(rng: np.random.Generator, members: list[np.ndarray]) -> Callable[[np.ndarray, int], np.ndarray]:
    """``draw(community [n], k) → [n, k]``: ``k`` uniform draws (with replacement) from each community's members."""
    by_community = np.concatenate(members)  # items grouped by community
    size = np.array([m.size for m in members])
    first = np.cumsum(size) - size

    def draw(community: np.ndarray, k: int) -> np.ndarray:
        pick = np.floor(rng.random((community.size, k)) * size[community, None]).astype(np.int64)
        return by_community[first[community, None] + pick]

    return draw


def _drifting_communities(
    rng: np.random.Generator,
    session_src: np.ndarray,
    num_src: int,
    num_communities: int,
    draw_members: Callable[[np.ndarray, int], np.ndarray],
    num_partners: int,
    drift_prob: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each session's community ``[S]`` and favourite items ``[S, num_partners]`` (item ids from 0).

    A source starts in a random community with random favourites there; at each of its sessions
    it moves with probability ``drift_prob`` to a random community with new favourites. Vectorized:
    a session takes the state drawn at its source's latest move (a running maximum per source).
    """
    num_sessions = session_src.size
    start_community = rng.integers(0, num_communities, size=num_src)
    start_partners = draw_members(start_community, num_partners)
    moved_community = rng.integers(0, num_communities, size=num_sessions)
    moved_partners = draw_members(moved_community, num_partners)
    moves = rng.random(num_sessions) < drift_prob

    by_source = np.argsort(session_src, kind="stable")  # each source's sessions in time order
    group = session_src[by_source]
    key = group * (num_sessions + 1) + np.where(moves[by_source], by_source + 1, 0)
    latest_move = np.empty(num_sessions, dtype=np.int64)
    latest_move[by_source] = np.maximum.accumulate(key) - group * (num_sessions + 1) - 1  # −1: none yet
    moved = latest_move >= 0
    community = np.where(moved, moved_community[latest_move], start_community[session_src])
    partners = np.where(moved[:, None], moved_partners[latest_move], start_partners[session_src])
    return community, partners
