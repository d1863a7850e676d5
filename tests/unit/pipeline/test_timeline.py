from lightning_mspipe.pipeline.timeline import StageSpan, TimelineRecorder


def test_idle_is_the_sum_of_the_gaps_between_a_lanes_spans():
    recorder = TimelineRecorder(batches=3, first=0)
    for index, (start, end) in enumerate([(0.0, 1.0), (1.5, 2.0), (4.0, 5.0)]):
        recorder.add("train", index, start, end)
    recorder.add("write", 0, 1.0, 9.0)  # another lane does not count
    assert recorder.idle("train") == 0.5 + 2.0 and recorder.busy("train") == 2.5
    assert recorder.idle_share("train") == 2.5 / 5.0


def test_only_the_window_and_the_first_epoch_are_recorded():
    recorder = TimelineRecorder(batches=2, first=1)
    for epoch_start in (0.0, 100.0):  # a second epoch repeats the batch indices
        for index in range(4):
            recorder.add("sample", index, epoch_start + index, epoch_start + index + 0.5)
    assert recorder.spans("sample") == [StageSpan("sample", 1, 1.0, 1.5), StageSpan("sample", 2, 2.0, 2.5)]
    assert recorder.idle("memory") == 0.0 and recorder.idle_share("memory") == 0.0
