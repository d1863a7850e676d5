"""A saved W&B workspace for lightning-mspipe runs: the panel layout as data, and a builder.

:data:`SECTIONS` is the layout: sections of panels, each panel a kind and the metric keys it
shows (the keys :class:`~lightning_mspipe.callbacks.PipelineStats`, the models and
:class:`~lightning_mspipe.staleness_mitigation.StalenessMitigation` log). :func:`save_workspace` turns it
into a W&B workspace view of a project with the ``wandb-workspaces`` package (``pip install
"lightning-mspipe[dashboard]"``, imported only there) and saves it; it needs a W&B login and
the network. From the shell::

    python -m lightning_mspipe.dashboard ENTITY PROJECT [--name NAME]

Line plots share the x axis ``trainer/global_step`` (the step Lightning's ``WandbLogger`` logs
with every metric), so per-step and per-epoch metrics line up.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from lightning_mspipe.pipeline.profile import STAGES

__all__ = [
    "SECTIONS", "X_AXIS", "Panel", "Section", "build_workspace", "main", "metric_keys", "save_workspace",
]

X_AXIS = "trainer/global_step"


@dataclass(frozen=True)
class Panel:
    """One panel of the workspace.

    Args:
        title: The panel's title.
        kind: ``"line"`` (one line per key over ``X_AXIS``), ``"stacked"`` (the keys' lines
            stacked), ``"scalar"`` (the last value of its one key), ``"histogram"`` (a logged
            ``wandb.Histogram`` over steps) or ``"image"`` (a logged picture).
        keys: The metric keys it shows.
    """

    title: str
    kind: Literal["line", "stacked", "scalar", "histogram", "image"]
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """A named group of panels (a collapsible section of the workspace)."""

    title: str
    panels: tuple[Panel, ...]


SECTIONS: tuple[Section, ...] = (
    Section("Training", (
        Panel("loss", "line", ("train/loss",)),
        Panel("validation", "line", ("val/ap", "val/auroc", "val/mrr")),
        Panel("test AP", "scalar", ("test/ap",)),
        Panel("test AUROC", "scalar", ("test/auroc",)),
        Panel("test MRR", "scalar", ("test/mrr",)),
        Panel("events/s", "line", ("pipeline/events_per_s",)),
    )),
    Section("Pipeline", (
        Panel("stage times (ms)", "stacked", tuple(f"pipeline/{s}_ms" for s in STAGES)),
        Panel("training stage idle share", "line", ("pipeline/idle_share",)),
        Panel("training stage wait per batch (ms)", "line", ("pipeline/wait_ms",)),
        Panel("staleness bound s and the largest staleness seen", "line",
              ("pipeline/bound", "pipeline/max_staleness", "pipeline/max_staleness_seen")),
        Panel("staleness per batch", "line", ("pipeline/staleness",)),
        Panel("staleness histogram", "histogram", ("pipeline/staleness_histogram",)),
        Panel("mitigation hit rate", "line", ("mitigation/blended_share",)),
        Panel("timeline", "image", ("pipeline/timeline",)),
    )),
)
"""The workspace's layout."""


def metric_keys() -> set[str]:
    """Every metric key the layout shows, the x axis included."""
    return {X_AXIS} | {key for section in SECTIONS for panel in section.panels for key in panel.keys}


def build_workspace(entity: str, project: str, name: str = "lightning-mspipe") -> Any:
    """The layout as a ``wandb_workspaces.workspaces.Workspace`` of ``entity/project`` (not saved).

    Raises:
        ModuleNotFoundError: ``wandb-workspaces`` is not installed (the message says how to install it).
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "Saving the W&B workspace needs the wandb-workspaces package; "
            "run `pip install 'lightning-mspipe[dashboard]'`."
        ) from error
    sections = [
        ws.Section(name=section.title, panels=[_api_panel(wr, p) for p in section.panels], is_open=True)
        for section in SECTIONS
    ]
    return ws.Workspace(name=name, entity=entity, project=project, sections=sections)


def _api_panel(wr: Any, panel: Panel) -> Any:
    """``panel`` as a panel of ``wandb_workspaces.reports.v2``."""
    if panel.kind == "scalar":
        (key,) = panel.keys
        return wr.ScalarChart(title=panel.title, metric=key)
    if panel.kind == "image":
        return wr.MediaBrowser(title=panel.title, media_keys=list(panel.keys))
    style = "stacked-area" if panel.kind == "stacked" else None  # a histogram key draws as one over steps
    return wr.LinePlot(title=panel.title, x=X_AXIS, y=list(panel.keys), plot_type=style)


def save_workspace(entity: str, project: str, name: str = "lightning-mspipe") -> str:
    """Save the layout as a workspace view of the W&B project ``entity/project``; returns its URL.

    Needs ``wandb-workspaces``, a W&B login (``wandb login``) and the network.

    Args:
        entity: The W&B user or team that owns the project.
        project: The project (``mspipe fit --wandb true`` logs to ``lightning-mspipe``).
        name: The view's name.

    Raises:
        ModuleNotFoundError: ``wandb-workspaces`` is not installed.
    """
    return build_workspace(entity, project, name).save().url


def main(args: list[str] | None = None) -> None:
    """``python -m lightning_mspipe.dashboard ENTITY PROJECT [--name NAME]``: save the workspace and
    print its URL; without ``wandb-workspaces``, one line on stderr and exit status 2."""
    from jsonargparse import CLI

    try:
        url = CLI(save_workspace, args=args)
    except ModuleNotFoundError as error:
        print(f"lightning_mspipe.dashboard: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(url)


if __name__ == "__main__":  # pragma: no cover
    main()
