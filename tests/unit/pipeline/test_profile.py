import time

import pytest

from lightning_mspipe.pipeline.profile import STAGES, PipelineProfile, StageTimer


def test_stage_times_over_the_last_entries_leave_out_earlier_ones():
    profile = PipelineProfile(window=10)
    for seconds in (9.0, 1.0, 2.0):  # a first batch that paid one-time costs, then two ordinary ones
        for stage in STAGES:
            profile.record(stage, seconds)
    assert profile.stage_times(last=2).sample == 1.5 and profile.stage_times().sample == 4.0
    assert profile.stage_times(last=2).as_dict() == {stage: 1.5 for stage in STAGES}


class TimingEvent:
    """A stand-in timing event at ``ms`` milliseconds that completes when the test says so."""

    def __init__(self, ms, done=True):
        self.ms, self.done = ms, done

    def query(self):
        return self.done

    def elapsed_time(self, end):
        assert self.done and end.done, "elapsed_time of an event that has not completed"
        return end.ms - self.ms


def test_device_stage_times_count_once_their_end_event_completed():
    profile = PipelineProfile()
    end = TimingEvent(30.0, done=False)
    profile.record_events("memory", 4, TimingEvent(10.0), end, host_start=0.0, host_end=0.001)
    assert profile.count("memory") == 0  # pending: never a blocking wait
    end.done = True
    assert profile.count("memory") == 1 and profile.mean("memory") == pytest.approx(0.020)


def test_a_stage_timer_on_device_events_takes_the_device_time_not_the_host_time():
    profile, clock = PipelineProfile(), iter([TimingEvent(0.0), TimingEvent(50.0), TimingEvent(100.0), TimingEvent(104.0)])
    timer = StageTimer(profile, events=lambda: next(clock))
    with timer.span("features", 1):
        pass  # the host only launched the copies: microseconds
    span = timer.start("train", 1)
    timer.stop(span, minus=0.001)  # a write the step waited for inside it
    assert profile.mean("features") == pytest.approx(0.050) and profile.mean("train") == pytest.approx(0.003)


def test_a_host_stage_timer_uses_the_host_clock():
    profile = PipelineProfile()
    with StageTimer(profile).span("sample", 0):
        time.sleep(0.01)
    assert profile.mean("sample") >= 0.009
