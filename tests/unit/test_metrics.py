import pytest
import torch

from lightning_mspipe.metrics import LinkMRR, link_mrr, link_ranks


def test_ranks_follow_tgb_tie_rule_on_a_hand_example():
    pos = torch.tensor([0.9, 0.5, 0.2])
    neg = torch.tensor(
        [
            [0.1, 0.2, 0.3],  # nothing higher: rank 1
            [0.5, 0.5, 0.7],  # one higher, two ties: rank 1 + 1 + 1 = 3
            [0.2, 0.9, 0.1],  # one higher, one tie: rank 2.5
        ]
    )
    assert link_ranks(pos, neg).tolist() == [1.0, 3.0, 2.5]
    assert float(link_mrr(pos, neg)) == pytest.approx((1 + 1 / 3 + 1 / 2.5) / 3)


def test_constant_scores_rank_in_the_middle():
    pos, neg = torch.zeros(4), torch.zeros(4, 99)
    assert link_ranks(pos, neg).eq(50.5).all()


def test_streaming_metric_matches_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (50,), generator=generator).float()
    neg = torch.randint(0, 5, (50, 20), generator=generator).float()
    reference = 0.0
    for p, row in zip(pos.tolist(), neg.tolist()):
        rank = 1 + sum(s > p for s in row) + 0.5 * sum(s == p for s in row)
        reference += 1 / rank
    metric = LinkMRR()
    for chunk in range(0, 50, 16):
        metric.update(pos[chunk : chunk + 16], neg[chunk : chunk + 16])
    assert float(metric.compute()) == pytest.approx(reference / 50, rel=1e-6)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"neg_score must be \[B, Q\]"):
        link_ranks(torch.zeros(3), torch.zeros(4, 2))
