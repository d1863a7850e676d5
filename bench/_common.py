"""Shared helpers of the benchmark scripts: machine description, data paths and result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DATASETS = Path(os.environ.get("MSPIPE_DATASETS", REPO.parent / "shared" / "datasets"))


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, load average, torch/lightning versions, device, and the date (UTC)."""
    import lightning

    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    return info


def write_results(name: str, payload: dict[str, Any], markdown: str, out: Path | None = None) -> tuple[Path, Path]:
    """Write ``{name}.json`` (payload plus machine info) and ``{name}.md`` under ``out`` (default bench/results)."""
    out = Path(out) if out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **payload}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    machine = payload["machine"]
    header = (
        f"Measured {machine['date']} on {machine['device']} ({machine['platform']}, {machine['cpu_count']} CPUs, "
        f"load average {', '.join(f'{x:.2f}' for x in machine['load_average'])}), torch {machine['torch']}, "
        f"lightning {machine['lightning']}.\n\n"
    )
    md_path.write_text(markdown.split("\n", 1)[0] + "\n\n" + header + markdown.split("\n", 1)[1].lstrip("\n"))
    return json_path, md_path
