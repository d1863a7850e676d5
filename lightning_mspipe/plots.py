"""Pictures of the pipeline: the stage timeline, one lane per stage and a bar per batch (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lightning_mspipe.pipeline.profile import STAGES
from lightning_mspipe.pipeline.timeline import TimelineRecorder

__all__ = ["LANE_NAMES", "plot_timelines"]

LANE_NAMES = {
    "sample": "1 sample",
    "features": "2 fetch features",
    "memory": "3 fetch memory",
    "train": "4 train",
    "write": "5 write memory",
}
_COLORS = {"sample": "#4C72B0", "features": "#55A868", "memory": "#C44E52", "train": "#8172B2", "write": "#CCB974"}


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "timeline pictures need matplotlib; run `pip install 'lightning-mspipe[plot]'`."
        ) from error
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_timelines(panels: Mapping[str, TimelineRecorder], path: str | Path) -> Path:
    """Draw one panel per recorder (for example ``s = 0`` and the chosen ``s``) and save a PNG.

    Each panel has one lane per stage (top: sample, bottom: write memory) and one bar per batch,
    its shade alternating from batch to batch; time 0 is the start of the window's first training
    step (stages 1–3 of a batch run earlier, to the left).
    The title gives the training lane's idle share: the white gaps in lane 4 are its bubbles.

    Args:
        panels: Title of each panel → the recorder of its run.
        path: Where to write the PNG (folders are created).

    Returns:
        The path written.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
        ValueError: a recorder holds no spans.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 2.3 * len(panels) + 0.6), squeeze=False)
    for ax, (title, recorder) in zip(axes[:, 0], panels.items()):
        spans = recorder.spans()
        if not spans:
            raise ValueError(f"plot_timelines: the recorder of {title!r} holds no spans; did the pipeline run?")
        trained = recorder.spans("train")
        origin = trained[0].start if trained else spans[0].start  # earlier prefetches start left of 0
        extent = max(span.end for span in spans) - origin
        for lane, stage in enumerate(STAGES):
            bars = [((s.start - origin) * 1e3, (s.end - s.start) * 1e3) for s in recorder.spans(stage)]
            shades = [_COLORS[stage] if s.index % 2 == 0 else _COLORS[stage] + "99" for s in recorder.spans(stage)]
            ax.broken_barh(bars, (len(STAGES) - 1 - lane - 0.4, 0.8), facecolors=shades, edgecolor="white",
                           linewidth=0.5)
        ax.set_yticks(range(len(STAGES)), [LANE_NAMES[stage] for stage in reversed(STAGES)])
        ax.set_title(f"{title}: training idle {recorder.idle_share():.0%} "
                     f"({1e3 * recorder.idle() / recorder.batches:.1f} ms per batch)", fontsize=10, loc="left")
        ax.set_xlim(-0.03 * extent * 1e3, 1.01 * extent * 1e3)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("time since the first training step of the window (ms, host clock)")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
