from lightning_mspipe.pipeline.profile import STAGES, PipelineProfile


def test_stage_times_over_the_last_entries_leave_out_earlier_ones():
    profile = PipelineProfile(window=10)
    for seconds in (9.0, 1.0, 2.0):  # a first batch that paid one-time costs, then two ordinary ones
        for stage in STAGES:
            profile.record(stage, seconds)
    assert profile.stage_times(last=2).sample == 1.5 and profile.stage_times().sample == 4.0
    assert profile.stage_times(last=2).as_dict() == {stage: 1.5 for stage in STAGES}
