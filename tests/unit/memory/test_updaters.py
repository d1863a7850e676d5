"""APAN's updater inputs: the rank of each mail, and the newest mail's age for every slot."""

import torch

from lightning_mspipe.memory.updaters import AttentionUpdater, mail_rank, newest_mail_time

INF = float("inf")


def test_a_mails_rank_counts_the_newer_valid_mails():
    mail_ts = torch.tensor([[3.0, 1.0, 2.0, 9.0], [5.0, 5.0, 4.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    rank = mail_rank(mail_ts, mask)
    assert rank[0, :3].tolist() == [0, 2, 1]  # the invalid slot at t=9 outranks nothing
    assert rank[1, :3].tolist() == [0, 0, 2]  # ties share a rank


def test_queried_at_a_time_every_mail_carries_the_age_of_the_nodes_newest_mail():
    updater = AttentionUpdater(memory_dim=4, mail_dim=3, time_dim=2, heads=2, slots=3)
    mail_ts = torch.tensor([[1.0, 4.0, 2.0], [7.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    times = torch.tensor([10.0, 8.0, 5.0], dtype=torch.float64)
    age = updater.mail_age(mail_ts, mask, reference=torch.zeros(3, dtype=torch.float64), times=times)
    assert age.tolist() == [[6.0, 6.0, 6.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]  # a node without mail: no age
    assert newest_mail_time(mail_ts, mask).tolist() == [4.0, 7.0, -INF]


def test_without_query_times_a_mail_carries_its_time_since_the_last_update():
    updater = AttentionUpdater(memory_dim=4, mail_dim=3, time_dim=2, heads=2, slots=2)
    mail_ts = torch.tensor([[3.0, 5.0]], dtype=torch.float64)
    age = updater.mail_age(mail_ts, torch.ones(1, 2, dtype=torch.bool), torch.tensor([2.0], dtype=torch.float64), None)
    assert age.tolist() == [[1.0, 3.0]]


def test_an_older_mails_time_moves_the_output_only_through_its_gap():
    torch.manual_seed(0)
    updater = AttentionUpdater(memory_dim=4, mail_dim=3, time_dim=2, heads=2, slots=2).eval()
    memory, mail = torch.randn(1, 4), torch.randn(1, 2, 3 + 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    near = updater.update(memory, mail, mask, torch.tensor([[4.0, 3.0]], dtype=torch.float64))
    far = updater.update(memory, mail, mask, torch.tensor([[4.0, 1.0]], dtype=torch.float64))
    assert not torch.allclose(near, far)  # the gap to the newest mail changed
    shifted = updater.update(memory, mail, mask, torch.tensor([[104.0, 103.0]], dtype=torch.float64))
    assert torch.allclose(near, shifted)  # same gaps and ranks: only the (given) age input could differ
