"""Shared fixtures: small synthetic streams and data modules, the path to the real data sets, and a check
that no pipeline thread outlives the test that started it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightning_mspipe.data.datamodule import TemporalDataModule
from lightning_mspipe.data.synthetic import synthetic_events
from lightning_mspipe.pipeline.lanes import THREAD_PREFIX

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SMALL_MODEL = dict(memory_dim=16, time_dim=8, embedding_dim=16)


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``../shared/datasets``; a missing folder fails the test instead of skipping it."""
    if not DATASETS.is_dir():
        pytest.fail(f"real data sets not found at {DATASETS}; tests read them from ../shared/datasets")
    return DATASETS


def small_datamodule(**overrides) -> TemporalDataModule:
    """A few thousand synthetic events with edge features, batch 200."""
    options = dict(events=synthetic_events(300, 3000, edge_dim=4, seed=1), batch_size=200, mrr_negatives=5)
    options.update(overrides)
    return TemporalDataModule(**options)


@pytest.fixture
def in_process_cli(monkeypatch):
    """``main(argv)`` is the only source of arguments (pytest's own argv would make Lightning warn);
    one intra-op thread: the tiny models gain nothing from more on shared cores."""
    monkeypatch.setattr(sys, "argv", ["mspipe"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pipeline_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith(THREAD_PREFIX)}


@pytest.fixture
def leaked_threads() -> Callable[[], list[str]]:
    """``leaked_threads()``: the names of the pipeline threads (sampler, fetcher, writer) this test started
    that are still alive after 5 s. Threads an earlier, failed test left behind do not count, so one
    failure does not fail every later thread check."""
    before = _pipeline_threads()

    def leaked(seconds: float = 5.0) -> list[str]:
        deadline = time.monotonic() + seconds
        while (alive := _pipeline_threads() - before) and time.monotonic() < deadline:
            time.sleep(0.01)
        return sorted(thread.name for thread in alive)

    return leaked
