import pytest

from lightning_mspipe.pipeline.auto import DISCARD, AutoBound
from lightning_mspipe.pipeline.schedule import StageTimes, auto_staleness

TIMES = StageTimes(sample=1, features=2, memory=3, train=10, write=1)  # s = ⌈14 / 10⌉ − 1 = 1


def test_phase_length_is_bounded_by_a_quarter_epoch_and_two_batches():
    policy = AutoBound(maximum=4, warmup=8)
    assert policy.phase_length(1000) == DISCARD + 8
    assert policy.phase_length(20) == DISCARD + 5
    assert policy.phase_length(3) == DISCARD + 2


def test_the_bound_follows_the_formula_and_is_clamped():
    assert AutoBound(maximum=4).choose_bound(TIMES) == auto_staleness(TIMES, 4) == 1
    assert AutoBound(maximum=0).choose_bound(TIMES) == 0


def test_the_faster_of_inline_and_pipelined_is_kept_once_two_pipelined_batches_were_measured():
    policy = AutoBound(maximum=4)
    policy.choose_bound(TIMES)
    policy.decide(TIMES, inline_period=1.0, pipelined_period=0.5, pipelined_batches=1)
    assert not policy.decided  # too few pipelined batches: measure again next epoch
    policy.decide(TIMES, inline_period=1.0, pipelined_period=0.5, pipelined_batches=2)
    assert policy.decided and policy.pipelined
    slower = AutoBound(maximum=4)
    slower.decide(TIMES, inline_period=0.5, pipelined_period=1.0, pipelined_batches=2)
    assert slower.decided and not slower.pipelined
    assert policy.choices[-1]["max_staleness"] == 1 and policy.choices[-1]["train"] == 10


def test_a_near_tie_goes_to_inline_and_a_clear_gain_to_the_pipeline():
    near_tie, clear_gain = AutoBound(maximum=4, margin=0.03), AutoBound(maximum=4, margin=0.03)
    near_tie.decide(TIMES, inline_period=1.0, pipelined_period=0.98, pipelined_batches=2)
    clear_gain.decide(TIMES, inline_period=1.0, pipelined_period=0.96, pipelined_batches=2)
    assert near_tie.decided and not near_tie.pipelined
    assert clear_gain.decided and clear_gain.pipelined
    with pytest.raises(ValueError, match="margin must be in"):
        AutoBound(maximum=4, margin=1.0)


def test_drift_makes_the_policy_measure_inline_and_pipelined_again():
    policy = AutoBound(maximum=8, drift=0.25)
    policy.choose_bound(TIMES)
    policy.decide(TIMES, 1.0, 0.5, 2)
    assert not policy.reestimate(TIMES)  # the first epoch in the chosen mode: its times become the reference
    assert not policy.reestimate(StageTimes(1, 2, 3, 11, 1))  # 10% slower step
    assert policy.decided and policy.pipelined and policy.bound == 1
    assert policy.reestimate(StageTimes(1, 2, 30, 10, 30))  # memory-bound now
    assert not policy.decided and not policy.pipelined  # the loader measures inline first, then pipelined
    assert "drifted" in policy.choices[-1]["reason"]
    policy.choose_bound(StageTimes(1, 2, 30, 10, 30))  # P = 32; ⌈70 / 32⌉ − 1 = 2
    policy.decide(StageTimes(1, 2, 30, 10, 30), inline_period=1.0, pipelined_period=2.0, pipelined_batches=2)
    assert policy.decided and not policy.pipelined and policy.bound == 2  # inline won this time


def test_drift_is_measured_against_the_first_epoch_in_the_chosen_mode():
    policy = AutoBound(maximum=8, drift=0.25)
    contended = StageTimes(sample=2, features=4, memory=6, train=15, write=2)  # the lanes slow the step on a CPU
    policy.decide(TIMES, inline_period=1.0, pipelined_period=0.8, pipelined_batches=2)
    assert not policy.reestimate(contended)  # far from the inline phase's times, but it is the reference now
    assert not policy.reestimate(contended) and policy.reestimate(TIMES)


def test_the_choice_survives_a_state_round_trip():
    policy = AutoBound(maximum=4)
    policy.choose_bound(TIMES)
    policy.decide(TIMES, 1.0, 0.5, 2)
    restored = AutoBound(maximum=4)
    restored.load_state_dict(policy.state_dict())
    assert (restored.bound, restored.pipelined, restored.decided) == (1, True, True)
    assert restored.choices == policy.choices and restored.choices[0]["memory"] == 3  # the inputs travel too
    policy.reestimate(TIMES)  # the reference travels too
    restored.load_state_dict(policy.state_dict())
    assert not restored.reestimate(TIMES) and restored.reestimate(StageTimes(1, 2, 30, 10, 30))


def test_a_restored_bound_above_this_runs_maximum_is_clamped():
    policy = AutoBound(maximum=4)
    policy.choose_bound(StageTimes(0.1, 0.1, 30.0, 1.0, 30.0))  # 2
    tighter = AutoBound(maximum=1)
    tighter.load_state_dict(policy.state_dict())
    assert tighter.bound == 1


@pytest.mark.parametrize(("kwargs", "match"), [(dict(maximum=-1), "max_auto_staleness must be ≥ 0"),
                                               (dict(maximum=2, warmup=0), "warmup must be ≥ 1")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoBound(**kwargs)
