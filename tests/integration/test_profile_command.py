"""``mspipe profile``: the stage timeline sequential, pipelined at s = 0 and at the chosen s, as recorded intervals
and a PNG."""

from __future__ import annotations

import lightning as L
import matplotlib.image
import pytest

from lightning_mspipe import TGN, PipelineTimeline
from lightning_mspipe.cli import MSPipeCLI
from lightning_mspipe.pipeline.profile import STAGES
from tests.conftest import SMALL_MODEL, small_datamodule

BATCHES, DELAY_MS = 6, 30
TINY = [
    *("--data.synthetic_events", "3000", "--data.synthetic_nodes", "200", "--data.batch_size", "200"),
    *("--model.memory_dim", "16", "--model.time_dim", "8", "--model.embedding_dim", "16"),
]


pytestmark = pytest.mark.usefixtures("in_process_cli")


def test_mspipe_profile_draws_three_runs_and_the_chosen_bound_overlaps_the_fetches_and_shrinks_the_bubbles(
    tmp_path, capsys
):
    """A 30 ms delay in every memory fetch and write (a slow link) makes the bubbles large and certain:
    sequentially the training thread waits for both between batches; pipelined at s = 0 each fetch
    waits for the previous write, so training idles at least the fetch's 30 ms between batches (the
    write is handed over at the end of the step and may overlap its backward pass).
    At the chosen s, a later batch's memory fetch starts while an earlier batch trains (it failed in
    about half the runs while a bounded fetch noticed the previous hand-over only every 50 ms)."""
    out = tmp_path / "x.png"
    cli = MSPipeCLI(args=["profile", "--out", str(out), "--batches", str(BATCHES), "--slow_link_ms", str(DELAY_MS),
                          *TINY, "--trainer.logger", "false"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(out).shape
    assert height > 200 and width > 600

    report = cli.trainer.profile_report
    assert report.chosen >= 1 and set(report.timelines) == {0, report.chosen}
    assert list(report.panels().values()) == [report.sequential, report.timelines[0], report.timelines[report.chosen]]
    for recorder in report.panels().values():
        assert {span.stage for span in recorder.spans()} == set(STAGES)
        assert [span.index for span in recorder.spans("train")] == list(range(2, 2 + BATCHES))
    assert report.sequential.idle("train") >= (BATCHES - 1) * 2 * DELAY_MS / 1e3
    synchronous, pipelined = report.timelines[0], report.timelines[report.chosen]
    assert synchronous.idle("train") >= (BATCHES - 1) * DELAY_MS / 1e3
    train_end = {span.index: span.end for span in pipelined.spans("train")}
    overlapping = [span.index for span in pipelined.spans("memory") if span.start < train_end.get(span.index - 1, -1.0)]
    assert len(overlapping) >= BATCHES // 2, overlapping
    # so the bubbles shrink (seen: 0.23-0.29 s idle at s = 0, 0.08-0.09 s at the chosen s = 2)
    assert pipelined.idle("train") < synchronous.idle("train")
    assert f"picture {out}" in capsys.readouterr().out


def test_mspipe_profile_on_real_stage_times_shows_the_sequential_bubbles_that_the_lanes_fill(tmp_path):
    """With no added delay (the default), the sequential run does stages 1–3 of each batch between two
    training steps, so every one of them sits in a bubble of the training lane; pipelined, the sampler
    lane prepares later batches before earlier ones have trained."""
    out = tmp_path / "real.png"
    cli = MSPipeCLI(args=["profile", "--out", str(out), "--batches", str(BATCHES), *TINY, "--trainer.logger", "false"])
    report = cli.trainer.profile_report
    sequential, pipelined = report.sequential, report.timelines[0]

    train = sequential.spans("train")
    for stage in ("sample", "features", "memory"):
        for span in sequential.spans(stage):
            assert not any(span.start < step.end and step.start < span.end for step in train), (stage, span)
    inside = [s for s in sequential.spans() if s.stage in ("sample", "features", "memory")
              and train[0].end <= s.start and s.end <= train[-1].start]
    assert inside and sum(s.end - s.start for s in inside) <= sequential.idle("train")

    # pipelined, a later batch's sampling starts before an earlier batch's step ends (when exactly the
    # sampler thread gets a core during a step is up to the OS scheduler on a busy machine)
    steps = pipelined.spans("train")
    ahead = [(s, t) for s in pipelined.spans("sample") for t in steps if s.index > t.index and s.start < t.end]
    assert ahead, "the sampler lane never ran ahead of training"


def test_the_timeline_needs_the_pipeline():
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, callbacks=[PipelineTimeline()], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="PipelineTimeline: training is not pipelined"):
        trainer.fit(model, dm)


def test_profile_refuses_a_model_the_pipeline_cannot_train(capsys):
    with pytest.raises(SystemExit) as exit_info:
        MSPipeCLI(args=["profile", "--model", "EdgeBank", *TINY[:6], "--trainer.logger", "false"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "mspipe: error: profile_pipeline: the pipeline trains memory-based TGNNs; got EdgeBank.\n"
    )
