import pytest

from lightning_mspipe.pipeline.schedule import StageTimes, auto_staleness, parse_max_staleness


def test_auto_bound_follows_the_formula():
    # P = max(1, 2 + 3, 10, 1) = 10; (3 + 10 + 1) / 10 = 1.4 -> ceil 2 -> s = 1
    assert auto_staleness(StageTimes(1, 2, 3, 10, 1), maximum=8) == 1
    # fast training, slow memory: P = max(1, 1 + 8, 2, 1) = 9; (8 + 2 + 1) / 9 -> 2 -> s = 1
    assert auto_staleness(StageTimes(1, 1, 8, 2, 1), maximum=8) == 1
    # everything equal: P = 2 (τ2 + τ3); (1 + 1 + 1) / 2 -> 2 -> s = 1
    assert auto_staleness(StageTimes(1, 1, 1, 1, 1), maximum=8) == 1
    # memory and write dominate: P = 4; (3 + 1 + 4) / 4 = 2 -> s = 1; with τ5 = 8: P = 8, (3+1+8)/8 -> 2 -> 1
    assert auto_staleness(StageTimes(0.1, 0.1, 0.1, 10.0, 0.1), maximum=8) == 1
    assert auto_staleness(StageTimes(0.1, 0.1, 30.0, 1.0, 30.0), maximum=8) == 2


def test_auto_bound_is_clamped():
    assert auto_staleness(StageTimes(1, 0, 50, 1, 50), maximum=1) == 1
    assert auto_staleness(StageTimes(0, 0, 0, 0, 0), maximum=4) == 0


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (3, 3), ("auto", "auto"), ("2", 2)])
def test_parse_accepts_ints_and_auto(value, expected):
    assert parse_max_staleness(value) == expected


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), ("soon", ValueError), (2.0, TypeError), (True, TypeError)])
def test_parse_rejects_bad_values(value, error):
    with pytest.raises(error, match="max_staleness"):
        parse_max_staleness(value)
