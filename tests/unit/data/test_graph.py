"""TemporalGraph: T-CSR layout and both samplers against a brute-force reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_mspipe.data import EventStream, NeighborBlock, TemporalGraph, load_events


# ---------------------------------------------------------------------- reference
def reference_recent(
    src: np.ndarray,
    dst: np.ndarray,
    t: np.ndarray,
    node: int,
    time: float,
    k: int,
    max_eid: int | None = None,
    held: np.ndarray | None = None,
) -> list[tuple[int, int, float]]:
    """(neighbour, eid, time) of the k most recent visible events, by plain filtering and sorting."""
    touches = (src == node) | (dst == node)
    visible = touches & (t < time)
    if max_eid is not None:
        visible &= np.arange(len(t)) < max_eid
    if held is not None:
        visible &= held
    eids = sorted(np.nonzero(visible)[0].tolist(), key=lambda e: (t[e], e), reverse=True)[:k]
    return [(int(dst[e] if src[e] == node else src[e]), e, float(t[e])) for e in eids]


def block_rows(block: NeighborBlock) -> list[list[tuple[int, int, float]]]:
    """The unpadded (neighbour, eid, time) triples of each root, in slot order."""
    rows = []
    for nodes, eids, times, mask in zip(block.nodes, block.eids, block.times, block.mask):
        valid = int(mask.sum())
        assert bool(mask[:valid].all()), "padding must come after the sampled neighbours"
        rows.append(
            [(int(n), int(e), float(x)) for n, e, x in zip(nodes[:valid], eids[:valid], times[:valid])]
        )
    return rows


def check_padding(block: NeighborBlock) -> None:
    pad = ~block.mask
    assert bool(
        (block.nodes[pad] == 0).all() and (block.eids[pad] == 0).all() and (block.times[pad] == 0).all()
    )


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def wikipedia(datasets_dir: Path) -> EventStream:
    return load_events(datasets_dir / "wikipedia" / "wikipedia_edges.csv.gz")


@pytest.fixture(scope="module")
def wiki_graph(wikipedia: EventStream) -> TemporalGraph:
    return TemporalGraph(wikipedia)


def _tiny() -> EventStream:
    # node 3 has a self-loop; events 1 and 2 tie at t=2.
    return EventStream(
        src=torch.tensor([0, 1, 2, 0, 3, 3]),
        dst=torch.tensor([1, 2, 0, 0, 0, 3]),
        t=torch.tensor([1.0, 2.0, 2.0, 3.0, 4.0, 4.0]),
        num_nodes=5,
    )


# ---------------------------------------------------------------------- layout
def test_tcsr_layout_matches_brute_force(wikipedia: EventStream, wiki_graph: TemporalGraph) -> None:
    src, dst, t = wikipedia.src.numpy(), wikipedia.dst.numpy(), wikipedia.t.numpy()
    assert wiki_graph.indptr.shape == (wikipedia.num_nodes + 1,)
    assert wiki_graph.nnz == 2 * wikipedia.num_events - int((src == dst).sum())
    assert wiki_graph.ts.dtype == torch.float64
    rng = np.random.default_rng(0)
    for node in rng.choice(wikipedia.num_nodes, size=40, replace=False):
        lo, hi = int(wiki_graph.indptr[node]), int(wiki_graph.indptr[node + 1])
        expected = np.nonzero((src == node) | (dst == node))[0]
        assert wiki_graph.eid[lo:hi].tolist() == expected.tolist()
        assert wiki_graph.ts[lo:hi].tolist() == t[expected].tolist()
        assert (
            wiki_graph.nbr[lo:hi].tolist()
            == np.where(src[expected] == node, dst[expected], src[expected]).tolist()
        )


def test_self_loop_listed_once_and_ties_by_index() -> None:
    graph = TemporalGraph(_tiny())
    lo, hi = int(graph.indptr[3]), int(graph.indptr[4])
    assert graph.eid[lo:hi].tolist() == [4, 5] and graph.nbr[lo:hi].tolist() == [0, 3]
    lo, hi = int(graph.indptr[2]), int(graph.indptr[3])
    assert graph.eid[lo:hi].tolist() == [1, 2]  # tie at t=2 kept in index order
    assert graph.degree().tolist() == [4, 2, 2, 2, 0]


# ---------------------------------------------------------------------- most recent on real data
@pytest.mark.parametrize("with_max_eid", [False, True])
def test_recent_matches_reference_on_wikipedia(
    wikipedia: EventStream, wiki_graph: TemporalGraph, with_max_eid: bool
) -> None:
    src, dst, t = wikipedia.src.numpy(), wikipedia.dst.numpy(), wikipedia.t.numpy()
    rng = np.random.default_rng(1 + with_max_eid)
    num_queries, k = 300, 10
    picked = rng.integers(0, wikipedia.num_events, size=num_queries)
    # Roots at event times (ties!), just after them, and at random times; some with no events.
    nodes = np.where(rng.random(num_queries) < 0.5, src[picked], dst[picked])
    times = t[picked] + rng.choice([0.0, 0.5, -0.5], size=num_queries)
    nodes[:20] = rng.integers(0, wikipedia.num_nodes, size=20)
    times[:20] = rng.uniform(t[0] - 1, t[-1] + 1, size=20)
    max_eid = np.maximum(picked - rng.integers(0, 2000, size=num_queries), 0) if with_max_eid else None
    block = wiki_graph.sample(
        torch.from_numpy(nodes),
        torch.from_numpy(times),
        k,
        max_eid=None if max_eid is None else torch.from_numpy(max_eid),
    )
    assert block.nodes.shape == block.eids.shape == block.times.shape == block.mask.shape == (num_queries, k)
    check_padding(block)
    got = block_rows(block)
    for i in range(num_queries):
        bound = None if max_eid is None else int(max_eid[i])
        assert got[i] == reference_recent(src, dst, t, int(nodes[i]), float(times[i]), k, bound), f"root {i}"
    assert sum(len(row) for row in got) > num_queries * k // 2  # the queries are not trivially empty


def test_scalar_max_eid_hides_batch(wikipedia: EventStream, wiki_graph: TemporalGraph) -> None:
    first = 5000
    batch = torch.arange(first, first + 600)
    nodes = torch.cat([wikipedia.src[batch], wikipedia.dst[batch]])
    times = wikipedia.t[batch].repeat(2)
    block = wiki_graph.sample(nodes, times, 10, max_eid=first)
    assert bool((block.eids[block.mask] < first).all())
    per_root = wiki_graph.sample(nodes, times, 10, max_eid=torch.full((nodes.numel(),), first))
    assert torch.equal(block.eids, per_root.eids) and torch.equal(block.mask, per_root.mask)


def test_uniform_draws_only_visible_on_wikipedia(wikipedia: EventStream, wiki_graph: TemporalGraph) -> None:
    src, dst, t = wikipedia.src.numpy(), wikipedia.dst.numpy(), wikipedia.t.numpy()
    rng = np.random.default_rng(3)
    picked = rng.integers(0, wikipedia.num_events, size=100)
    nodes, times, max_eid = src[picked], t[picked], picked - 50
    block = wiki_graph.sample(
        torch.from_numpy(nodes),
        torch.from_numpy(times),
        20,
        "uniform",
        torch.from_numpy(max_eid),
        generator=torch.Generator().manual_seed(0),
    )
    check_padding(block)
    for i in range(len(nodes)):
        visible = {
            e
            for _, e, _ in reference_recent(
                src, dst, t, int(nodes[i]), float(times[i]), 10**9, int(max_eid[i])
            )
        }
        assert bool(block.mask[i].all()) == bool(visible)
        assert set(block.eids[i][block.mask[i]].tolist()) <= visible


# ---------------------------------------------------------------------- properties
@st.composite
def small_streams(draw: st.DrawFn) -> tuple[EventStream, np.ndarray]:
    num_nodes = draw(st.integers(1, 6))
    num_events = draw(st.integers(1, 40))
    ids = st.lists(st.integers(0, num_nodes - 1), min_size=num_events, max_size=num_events)
    times = sorted(draw(st.lists(st.integers(0, 5), min_size=num_events, max_size=num_events)))  # many ties
    held = np.array(draw(st.lists(st.booleans(), min_size=num_events, max_size=num_events)))
    events = EventStream(
        src=torch.tensor(draw(ids)),
        dst=torch.tensor(draw(ids)),
        t=torch.tensor(times, dtype=torch.float64),
        num_nodes=num_nodes,
    )
    return events, held


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=small_streams(), seed=st.integers(0, 2**31 - 1), subset=st.booleans(), k=st.integers(1, 6))
def test_property_no_leakage_and_reference(
    data: tuple[EventStream, np.ndarray], seed: int, subset: bool, k: int
) -> None:
    events, held = data
    graph = TemporalGraph(events, eids=torch.from_numpy(held)) if subset else TemporalGraph(events)
    src, dst, t = events.src.numpy(), events.dst.numpy(), events.t.numpy()
    rng = np.random.default_rng(seed)
    num_roots = 16
    nodes = torch.from_numpy(rng.integers(0, events.num_nodes, size=num_roots))
    times = torch.from_numpy(rng.integers(-1, 7, size=num_roots).astype(np.float64))
    max_eid = torch.from_numpy(rng.integers(-1, events.num_events + 2, size=num_roots))
    recent = graph.sample(nodes, times, k, max_eid=max_eid)
    uniform = graph.sample(nodes, times, k, "uniform", max_eid, generator=torch.Generator().manual_seed(seed))
    for block in (recent, uniform):
        check_padding(block)
        assert bool((block.times[block.mask] < times.unsqueeze(1).expand(-1, k)[block.mask]).all())
        assert bool((block.eids[block.mask] < max_eid.unsqueeze(1).expand(-1, k)[block.mask]).all())
        if subset:
            assert bool(torch.from_numpy(held)[block.eids[block.mask]].all())
    for i, row in enumerate(block_rows(recent)):
        expected = reference_recent(
            src, dst, t, int(nodes[i]), float(times[i]), k, int(max_eid[i]), held if subset else None
        )
        assert row == expected
        assert bool(uniform.mask[i].all()) == bool(expected)  # with replacement: all K slots or none


# ---------------------------------------------------------------------- uniform sampling
def test_uniform_is_uniform_over_visible_events() -> None:
    # Node 0 has 12 events at t = 0 … 11; roots at t = 7 with max_eid 9 (hides the event at 7 too)
    # see events 0 … 6: each must come up with probability 1/7, and no other.
    events = EventStream(src=torch.zeros(12, dtype=torch.long), dst=torch.arange(1, 13), t=torch.arange(12.0))
    graph = TemporalGraph(events)
    draws = graph.sample(
        torch.zeros(5000, dtype=torch.long),
        torch.full((5000,), 7.0),
        14,
        "uniform",
        max_eid=9,
        generator=torch.Generator().manual_seed(123),
    )
    assert bool(draws.mask.all())
    counts = torch.bincount(draws.eids.reshape(-1), minlength=12)
    assert counts[7:].sum() == 0
    expected = draws.eids.numel() / 7
    chi2 = float(((counts[:7].double() - expected) ** 2 / expected).sum())
    assert chi2 < 35.0, f"chi-square {chi2:.1f} over 6 degrees of freedom (p < 1e-5 threshold 35)"
    assert torch.equal(draws.nodes, draws.eids + 1) and torch.equal(draws.times, draws.eids.double())


def test_uniform_seeds_repeat_and_differ(wiki_graph: TemporalGraph, wikipedia: EventStream) -> None:
    nodes, times = wikipedia.src[-500:], wikipedia.t[-500:]

    def run(seed: int) -> NeighborBlock:
        return wiki_graph.sample(nodes, times, 10, "uniform", generator=torch.Generator().manual_seed(seed))

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first.eids, again.eids) and torch.equal(first.nodes, again.nodes)
    assert not torch.equal(first.eids, other.eids)


# ---------------------------------------------------------------------- edge cases
def test_empty_neighbourhoods() -> None:
    graph = TemporalGraph(_tiny())
    # node 4: no events at all; node 0 at t=1: its first event is at t=1, not strictly earlier;
    # node 1 with max_eid 0: everything hidden.
    nodes, times = torch.tensor([4, 0, 1]), torch.tensor([10.0, 1.0, 10.0])
    for strategy in ("recent", "uniform"):
        block = graph.sample(nodes, times, 3, strategy, max_eid=torch.tensor([6, 6, 0]))
        assert not bool(block.mask.any())
        check_padding(block)
    empty = TemporalGraph(_tiny(), eids=torch.tensor([], dtype=torch.long))
    assert empty.nnz == 0 and not bool(empty.sample(nodes, times, 2).mask.any())
    assert graph.sample(torch.tensor([], dtype=torch.long), torch.tensor([]), 2).nodes.shape == (0, 2)


def test_training_subset_keeps_original_eids(wikipedia: EventStream) -> None:
    train_end = int(0.7 * wikipedia.num_events)
    val = torch.arange(train_end, wikipedia.num_events)
    graph = TemporalGraph(
        wikipedia, eids=val[torch.randperm(val.numel(), generator=torch.Generator().manual_seed(0))]
    )
    assert graph.held_events == val.numel() and bool((graph.eid >= train_end).all())
    mask = torch.zeros(wikipedia.num_events, dtype=torch.bool)
    mask[train_end:] = True
    by_mask = TemporalGraph(wikipedia, eids=mask)
    assert torch.equal(graph.eid, by_mask.eid) and torch.equal(graph.indptr, by_mask.indptr)
    nodes, times = wikipedia.dst[-300:], wikipedia.t[-300:]
    block = graph.sample(nodes, times, 10)
    assert bool(block.mask.any()) and bool((block.eids[block.mask] >= train_end).all())
    assert torch.equal(wikipedia.t[block.eids[block.mask]], block.times[block.mask])
    touches = (wikipedia.src[block.eids] == nodes[:, None]) | (wikipedia.dst[block.eids] == nodes[:, None])
    assert bool(touches[block.mask].all())


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"nodes": torch.tensor([0, 7]), "times": torch.tensor([1.0, 1.0])},
            r"node id 7 \(root 1\).*num_nodes=5",
        ),
        ({"nodes": torch.tensor([-1]), "times": torch.tensor([1.0])}, r"node id -1.*num_nodes=5"),
        ({"k": 0}, r"k=0; pass an int k ≥ 1"),
        ({"strategy": "latest"}, r"unknown strategy 'latest'; valid strategies: 'recent', 'uniform'"),
        ({"times": torch.tensor([1.0])}, r"`nodes` has shape \(2,\) and `times` \(1,\)"),
        ({"max_eid": torch.tensor([1, 2, 3])}, r"`max_eid` has shape \(3,\) but there are 2 roots"),
        ({"times": torch.tensor([1.0, float("nan")])}, r"time of root 1 is nan"),
        ({"nodes": torch.tensor([0.0, 1.0])}, r"`nodes` has dtype torch.float32"),
    ],
)
def test_sample_errors(kwargs: dict, match: str) -> None:
    args = {"nodes": torch.tensor([0, 1]), "times": torch.tensor([1.0, 2.0]), "k": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        TemporalGraph(_tiny()).sample(**args)


@pytest.mark.parametrize(
    ("eids", "error", "match"),
    [
        (
            torch.tensor([0, 6]),
            ValueError,
            r"event index 6 in `eids` is out of range for a stream of 6 events",
        ),
        (torch.tensor([1, 3, 1]), ValueError, r"event index 1 appears more than once"),
        (torch.ones(4, dtype=torch.bool), ValueError, r"mask has shape \(4,\) but the stream has 6 events"),
        (torch.tensor([0.0, 1.0]), TypeError, r"`eids` has dtype torch.float32"),
    ],
)
def test_subset_errors(eids: torch.Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TemporalGraph(_tiny(), eids=eids)
