"""keep_freed_cpu_memory: freed tensor memory stays in the process (glibc), and users can opt out."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from lightning_mspipe import allocator

# Prints how much of a freed 64 MB block (8 MB tensors, the size of a TGN step's slot tensors) the process
# still holds: ~64 with the thresholds raised (the heap keeps it), ~0 with glibc's defaults (munmap).
_PROBE = """
import os, torch
from lightning_mspipe.allocator import keep_freed_cpu_memory
applied = keep_freed_cpu_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mb()
blocks = [torch.ones(2 << 20) for _ in range(8)]
del blocks
print(applied, round(rss_mb() - before))
"""

needs_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator only"
)


def _probe(**env: str) -> tuple[bool, int]:
    ignored = {allocator.OPT_OUT[0], *allocator.USER_SETTINGS}
    clean = {k: v for k, v in os.environ.items() if k not in ignored}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=clean | env, capture_output=True, text=True, check=True)
    applied, kept_mb = out.stdout.split()
    return applied == "True", int(kept_mb)


@needs_glibc
def test_freed_tensor_memory_stays_in_the_process() -> None:
    applied, kept_mb = _probe()
    assert applied and kept_mb >= 48


@needs_glibc
@pytest.mark.parametrize("env", [{"LIGHTNING_MSPIPE_MALLOC": "default"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}],
                         ids=["opt_out", "user_setting"])
def test_the_allocator_is_left_alone_when_asked_or_set_by_the_user(env: dict[str, str]) -> None:
    applied, kept_mb = _probe(**env)
    assert not applied and kept_mb <= 16  # glibc's defaults: the 8 MB blocks are unmapped when freed


def test_opt_out_returns_false_without_touching_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv(*allocator.OPT_OUT)
    assert allocator.keep_freed_cpu_memory() is False and allocator._applied is False
