"""The W&B workspace layout (lightning_mspipe/dashboard.py), without wandb-workspaces or the network: the
package is replaced by a stand-in that records what the builder asks of it. That every key the layout
shows is logged is checked by an offline W&B run in tests/integration/test_logging.py."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightning_mspipe import dashboard
from lightning_mspipe.dashboard import SECTIONS, X_AXIS

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto.md"
PACKAGES = (
    "wandb_workspaces",
    "wandb_workspaces.reports",
    "wandb_workspaces.reports.v2",
    "wandb_workspaces.workspaces",
)


class StandInWorkspace(SimpleNamespace):
    """``wandb_workspaces.workspaces.Workspace``: keeps its arguments; ``save`` gives it a URL."""

    def save(self) -> StandInWorkspace:
        self.url = f"https://wandb.ai/{self.entity}/{self.project}?nw={self.name}"
        return self


@pytest.fixture
def stand_in(monkeypatch) -> None:
    """A ``wandb_workspaces`` whose panels are ``(kind, arguments)`` pairs."""
    modules = {name: types.ModuleType(name) for name in PACKAGES}
    reports, workspaces = modules["wandb_workspaces.reports.v2"], modules["wandb_workspaces.workspaces"]
    for kind in ("LinePlot", "ScalarChart", "MediaBrowser"):
        setattr(reports, kind, lambda kind=kind, **arguments: (kind, arguments))
    workspaces.Section, workspaces.Workspace = SimpleNamespace, StandInWorkspace
    modules["wandb_workspaces"].reports = modules["wandb_workspaces.reports"]
    modules["wandb_workspaces"].workspaces = workspaces
    modules["wandb_workspaces.reports"].v2 = reports
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_the_layout_becomes_a_workspace_of_the_project(stand_in):
    workspace = dashboard.build_workspace("team", "lightning-mspipe", name="pipeline")
    assert (workspace.entity, workspace.project, workspace.name) == ("team", "lightning-mspipe", "pipeline")
    assert [section.name for section in workspace.sections] == [section.title for section in SECTIONS]
    assert all(section.is_open for section in workspace.sections)
    built = [panel for section in workspace.sections for panel in section.panels]
    layout = [panel for section in SECTIONS for panel in section.panels]
    assert len(built) == len(layout)
    for (kind, arguments), panel in zip(built, layout):
        assert arguments["title"] == panel.title
        if panel.kind == "scalar":
            assert (kind, [arguments["metric"]]) == ("ScalarChart", list(panel.keys))
        elif panel.kind == "image":
            assert (kind, arguments["media_keys"]) == ("MediaBrowser", list(panel.keys))
        else:
            assert (kind, arguments["x"], arguments["y"]) == ("LinePlot", X_AXIS, list(panel.keys))
            assert arguments["plot_type"] == ("stacked-area" if panel.kind == "stacked" else None)


def test_the_command_saves_the_workspace_and_prints_its_url(stand_in, capsys):
    dashboard.main(["team", "my-project"])
    assert capsys.readouterr().out == "https://wandb.ai/team/my-project?nw=lightning-mspipe\n"


def test_without_wandb_workspaces_the_command_says_how_to_install_it(monkeypatch, capsys):
    for name in PACKAGES:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(SystemExit) as exit_info:
        dashboard.main(["team", "my-project"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "lightning_mspipe.dashboard: error: Saving the W&B workspace needs the wandb-workspaces package; "
        "run `pip install 'lightning-mspipe[dashboard]'`.\n"
    )


def test_a_scalar_panel_shows_one_key_and_no_key_is_shown_twice():
    panels = [panel for section in SECTIONS for panel in section.panels]
    assert all(len(panel.keys) == 1 for panel in panels if panel.kind in ("scalar", "histogram", "image"))
    keys = [key for panel in panels for key in panel.keys]
    assert len(keys) == len(set(keys))


def test_the_how_to_names_every_key_of_the_layout():
    text = HOWTO.read_text()
    assert not [key for key in sorted(dashboard.metric_keys()) if f"`{key}`" not in text]
