"""The public API: what ``lightning_mspipe`` and ``lightning_mspipe.data`` export, and the docs' imports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lightning_mspipe
import lightning_mspipe.data
from lightning_mspipe import callbacks, models, staleness_mitigation, strategy
from lightning_mspipe.distributed import strategy as ddp_strategy
from lightning_mspipe.pipeline import stages
from lightning_mspipe.data import datamodule, formats, registry, synthetic

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = {
    "TGN": models.TGN,
    "JODIE": models.JODIE,
    "APAN": models.APAN,
    "EdgeBank": models.EdgeBank,
    "MemoryNetwork": models.MemoryNetwork,
    "TGNNetwork": models.TGNNetwork,
    "JODIENetwork": models.JODIENetwork,
    "APANNetwork": models.APANNetwork,
    "fetch_memory": stages.fetch_memory,
    "MSPipeStrategy": strategy.MSPipeStrategy,
    "MSPipeDDPStrategy": ddp_strategy.MSPipeDDPStrategy,
    "TemporalDataModule": datamodule.TemporalDataModule,
    "load_events": formats.load_events,
    "load_dataset": registry.load_dataset,
    "synthetic_events": synthetic.synthetic_events,
    "StalenessGuard": callbacks.StalenessGuard,
    "StalenessMitigation": staleness_mitigation.StalenessMitigation,
    "PipelineStats": callbacks.PipelineStats,
    "PipelineTimeline": callbacks.PipelineTimeline,
}
# `from lightning_mspipe... import ...` in a fenced Python block of the README or docs/
DOC_IMPORT = re.compile(r"^from (lightning_mspipe[\w.]*) import (.+)$", re.MULTILINE)
SHORT_MODULES = {"lightning_mspipe", "lightning_mspipe.data", "lightning_mspipe.cli"}


@pytest.mark.parametrize("name", sorted(TOP_LEVEL))
def test_top_level_name_is_the_defining_object(name):
    assert getattr(lightning_mspipe, name) is TOP_LEVEL[name]


def test_all_lists_exactly_the_public_names():
    assert set(lightning_mspipe.__all__) == set(TOP_LEVEL) | {"__version__"}
    namespace: dict[str, object] = {}
    exec("from lightning_mspipe import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(lightning_mspipe.__all__)


def test_data_package_exports_the_data_module_and_the_streams():
    assert {"TemporalDataModule", "load_events", "synthetic_events"} <= set(lightning_mspipe.data.__all__)
    assert lightning_mspipe.data.TemporalDataModule is datamodule.TemporalDataModule
    assert lightning_mspipe.data.load_events is formats.load_events
    assert lightning_mspipe.data.synthetic_events is synthetic.synthetic_events
    assert all(hasattr(lightning_mspipe.data, name) for name in lightning_mspipe.data.__all__)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_use_the_short_imports(page):
    for module, names in DOC_IMPORT.findall(page.read_text()):
        assert module in SHORT_MODULES, f"{page.name}: `from {module} import {names}`; use the short import"
        exported = vars(__import__(module, fromlist=["_"]))
        for name in (n.strip() for n in names.split(",")):
            assert name in exported, f"{page.name}: {module} has no {name}"
