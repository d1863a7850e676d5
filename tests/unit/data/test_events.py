import numpy as np
import pytest
import torch

from lightning_mspipe.data import EventStream, EventStreamError


def _stream(**overrides):
    kwargs = dict(src=torch.tensor([0, 1, 2]), dst=torch.tensor([1, 2, 0]), t=torch.tensor([1.0, 2.0, 2.0]))
    kwargs.update(overrides)
    return EventStream(**kwargs)


def test_counts_and_dtypes():
    events = _stream(edge_feat=np.ones((3, 4)), label=[0, 1, 0])
    assert events.num_events == 3 and events.num_nodes == 3 and events.edge_dim == 4
    assert events.src.dtype == torch.int64 and events.t.dtype == torch.float64
    assert events.edge_feat.dtype == torch.float32


def test_unsorted_names_first_row():
    with pytest.raises(EventStreamError, match=r"not sorted \(event 2: 1 < 3\).*sort=True"):
        _stream(t=torch.tensor([1.0, 3.0, 1.0]))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(t=torch.tensor([1.0, float("nan"), 2.0])), "event 1 is nan"),
        (dict(src=torch.tensor([0, -1, 2])), "`src` of event 1 is -1"),
        (dict(dst=torch.tensor([1.0, 2.5, 0.0])), "`dst` of event 1 is 2.5, not an integer"),
        (dict(edge_feat=torch.ones(2, 3)), "`edge_feat` has 2 rows but there are 3 events"),
        (dict(num_nodes=2), "node id 2 is ≥ num_nodes=2"),
        (dict(src=torch.tensor([], dtype=torch.long), dst=torch.tensor([], dtype=torch.long), t=torch.tensor([])), "empty"),
    ],
)
def test_bad_input_is_named(overrides, match):
    with pytest.raises(EventStreamError, match=match):
        _stream(**overrides)


def test_sort_is_stable_and_moves_features_and_labels():
    events = EventStream(
        src=torch.tensor([0, 1, 2, 0]),
        dst=torch.tensor([1, 2, 0, 2]),
        t=torch.tensor([2.0, 1.0, 2.0, 0.5]),
        edge_feat=torch.tensor([[0.0], [1.0], [2.0], [3.0]]),
        label=torch.tensor([5, 6, 7, 8]),
        sort=True,
    )
    assert events.t.tolist() == [0.5, 1.0, 2.0, 2.0]
    assert events.src.tolist() == [0, 1, 0, 2]  # the two events at t=2 keep their order
    assert events.edge_feat.squeeze(1).tolist() == [3.0, 1.0, 0.0, 2.0]
    assert events.label.tolist() == [8, 6, 5, 7]


def test_select_keeps_nodes():
    events = _stream(edge_feat=torch.arange(3.0))
    sub = events.select(torch.tensor([2]))
    assert sub.num_events == 1 and sub.num_nodes == 3 and sub.edge_feat.tolist() == [[2.0]]
