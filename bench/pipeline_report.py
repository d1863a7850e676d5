"""The report of bench/pipeline.py: ratios, the part-2 regime summary, targets, tables and markdown."""

from __future__ import annotations

import math
import statistics
import subprocess
from typing import Any

from bench._common import REPO
from bench.pipeline_runner import WINDOW
from bench.staleness_accuracy import seeds_in, summary_table
from bench.staleness_accuracy import target_checks as staleness_targets
from lightning_mspipe.pipeline.auto import AutoBound


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Events/s relative to the same model's ``seq`` and ``0`` rows of the same part: the ratio of the
    median runs (``vs_seq``, ``vs_s0``) and the median of the per-round ratios (``vs_seq_paired``,
    ``vs_s0_paired``: round ``r`` runs every config once, back to back, so a slow drift of the
    machine's speed cancels in each round's ratio)."""
    for row in rows:
        for ref, key in (("seq", "vs_seq"), ("0", "vs_s0")):
            base = next(
                (
                    r
                    for r in rows
                    if r["part"] == row["part"] and r["model"] == row["model"] and r["config"] == ref
                ),
                None,
            )
            row[key] = None if base is None else row["events_per_s"] / base["events_per_s"]
            ratios = [x / b for x, b in zip(row.get("runs_events_per_s", []), (base or {}).get("runs_events_per_s", []))]
            row[f"{key}_paired"] = statistics.median(ratios) if ratios else None
            row[f"{key}_paired_mean"] = statistics.fmean(ratios) if ratios else None
            row[f"{key}_paired_se"] = statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else None


def measurement_cost(row: dict[str, Any]) -> float | None:
    """Share of an ``auto`` run that its measurement cost when it kept the stages inline: the pipelined
    phase's extra seconds per batch over the inline period, times the phase's batches, over the run's
    training time (``None`` when the run kept the pipeline, or made no choice)."""
    choices = row.get("choices") or []
    if not choices or choices[-1]["pipelined"] or "pipelined_period" not in choices[-1]:
        return None
    extra = max(0.0, choices[-1]["pipelined_period"] - choices[-1]["inline_period"])
    phase = AutoBound(maximum=0).phase_length(row["batches"])
    return extra * phase / (row["epochs"] * row["epoch_s"])


def regime_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per emulated regime (part 2): each pipelined row's steady-state speed-up over ``seq`` (ratio of
    the iteration times over the last ``WINDOW`` batches, so auto's inline warm-up is left out; the
    events/s ratio, warm-up included, is kept too) against the model's limit ``Στ / P_model`` with
    ``P_model = max(τ1, τ2 + τ3, τ4, τ5)`` from the ``seq`` row's τ, and the row's efficiency
    ``P_model / iteration`` (its own measured τ)."""
    out = []
    for part in sorted({r["part"] for r in rows if r["part"].startswith("2")}):
        part_rows = [r for r in rows if r["part"] == part]
        seq = next((r for r in part_rows if r["config"] == "seq"), None)
        if seq is None:
            continue
        ideal = seq["sequential_ms"] / seq["period_ms"]
        for r in part_rows:
            if r["config"] == "seq":
                continue
            speedup = seq["iteration_ms"] / r["iteration_ms"]
            out.append({"part": part, "regime": r["regime"], "config": r["config"], "speedup": speedup,
                        "events_per_s_ratio": r.get("vs_seq"), "ideal_speedup": ideal,
                        "speedup_share_of_ideal": speedup / ideal, "efficiency": r["efficiency"],
                        "latency_ms": r["emulated_latency_ms"]})
    return out


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value) if spec == "s" else format(value, spec)


COLUMNS = [
    ("model", "model", "s"),
    ("config", "config", "s"),
    ("s in force", "s", "s"),
    ("events/s", "events_per_s", ",.0f"),
    ("×seq", "vs_seq", ".3f"),
    ("×seq paired", "vs_seq_paired", ".3f"),
    ("×s0", "vs_s0", ".3f"),
    ("test AP", "test_ap", ".4f"),
    ("idle", "idle_share", ".3f"),
    ("P", "period_ms", ".1f"),
    ("eff", "efficiency", ".3f"),
    ("τ1", "tau1_ms", ".1f"),
    ("τ2", "tau2_ms", ".1f"),
    ("τ3", "tau3_ms", ".1f"),
    ("τ4", "tau4_ms", ".1f"),
    ("τ5", "tau5_ms", ".1f"),
    ("iter", "iteration_ms", ".1f"),
    ("stale", "staleness_mean", ".2f"),
    ("other", "cotenant_share", ".3f"),
    ("load", "load_1min_before", ".2f"),
]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt(r.get(key), spec) for _, key, spec in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def spread_table(rows: list[dict[str, Any]]) -> str:
    """Every run's events/s, test AP and bound, per config (the main table shows the median run)."""
    head = (
        "| model | config | events/s of each run | min/max | test AP of each run | s of each run "
        "| other processes' CPU share | load before each run |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = r["runs_events_per_s"]
        lines.append(
            f"| {r['model']} | {r['config']} | {', '.join(f'{x:,.0f}' for x in eps)} | "
            f"{min(eps) / max(eps):.3f} | {', '.join(fmt(x, '.4f') for x in r['runs_test_ap'])} | "
            f"{', '.join(r['runs_s'])} | {', '.join(fmt(x, '.3f') for x in r['runs_cotenant_share'])} | "
            f"{', '.join(f'{x:.2f}' for x in r['runs_load'])} |"
        )
    return "\n".join(lines)


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout  # not stripped: each line is "XY path", and X may be a space
        changed = [line[3:] for line in dirty.splitlines() if line.strip()]
        return head + (" + uncommitted changes in " + ", ".join(changed) if changed else "")
    except OSError:
        return "unknown"


def target_checks(rows: list[dict[str, Any]], emulation: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with the measured figures and MET / MISSED."""

    def find(part: str, model: str, config: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["part"], r["model"], r["config"]) == (part, model, config)), None)

    out = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    for part, model in sorted({(r["part"], r["model"]) for r in rows if not r["part"].startswith("2")}):
        auto, s0 = find(part, model, "auto"), find(part, model, "0")
        if auto is not None and auto.get("vs_seq_paired") is not None:
            refs = [("seq", auto["vs_seq_paired"])] + (
                [("s=0", auto["vs_s0_paired"])] if auto.get("vs_s0_paired") is not None else []
            )
            ok = all(ratio >= 0.98 for _, ratio in refs)
            shown = ", ".join(f"{ratio:.3f}× {name}" for name, ratio in refs)
            spread = ("" if auto.get("vs_seq_paired_se") is None else
                      f"; mean of the per-round ratios {auto['vs_seq_paired_mean']:.3f} ± {auto['vs_seq_paired_se']:.3f} "
                      "(standard error)")
            cost = measurement_cost(auto)
            kept_inline = "" if cost is None else (
                f"; auto's pipelined measurement phase cost {cost:.2%} of the run")
            out.append(
                f"- {model}: auto events/s ≥ 0.98× {' and '.join(n for n, _ in refs)} (median of the per-round "
                f"ratios): {shown} ({auto['s']}; ratio of the median runs {auto['vs_seq']:.3f}× seq{spread}"
                f"{kept_inline}): {verdict(ok)}"
            )
        if auto is not None and s0 is not None and auto["test_ap"] is not None and s0["test_ap"] is not None:
            gap = 100 * (auto["test_ap"] - s0["test_ap"])
            out.append(
                f"- {model}: test AP at auto within 0.3 points of s=0: {100 * auto['test_ap']:.2f} vs "
                f"{100 * s0['test_ap']:.2f} ({gap:+.2f}): {verdict(abs(gap) <= 0.3)}"
            )
        for r in rows:
            if (r["part"], r["model"]) != (part, model) or not r["mitigation"]:
                continue
            plain = find(part, model, r["config"][:-2])
            if plain is None or plain["test_ap"] is None or r["test_ap"] is None:
                continue
            gap = 100 * (r["test_ap"] - plain["test_ap"])
            out.append(
                f"- {model}: mitigation does not lower AP at `{r['config'][:-2]}`: {100 * r['test_ap']:.2f} with vs "
                f"{100 * plain['test_ap']:.2f} without ({gap:+.2f}; blended share "
                f"{r.get('blended_share', 0.0):.3f}): {verdict(gap >= 0)}"
            )
    for e in emulation:
        if e["config"] != "auto":
            continue
        ok_eff, ok_speed = e["efficiency"] >= 0.9, e["speedup_share_of_ideal"] >= 0.9
        out.append(
            f"- EMULATED {e['regime']} (+{'/'.join(f'{x:.1f}' for x in e['latency_ms'])} ms on stages 2/3/5): "
            f"efficiency P_model / iteration at auto ≥ 0.9: {e['efficiency']:.3f}: {verdict(ok_eff)}; speed-up within "
            f"10% of Στ/P_model = {e['ideal_speedup']:.2f}×: {e['speedup']:.2f}× ({e['speedup_share_of_ideal']:.0%}): "
            f"{verdict(ok_speed)}"
        )
    return out


def staleness_section(recorded: dict[str, Any], name: str) -> list[str]:
    """The accuracy-at-staleness table and its targets from ``bench/staleness_accuracy.py``'s results file
    ``name`` (its JSON, ``recorded``), for the pipeline report."""
    config = recorded["config"]
    selected = "the epoch with the best validation AP" if config.get("select") == "best" else "the last epoch"
    return [
        "## Accuracy at bounded staleness",
        "",
        (
            f"Not rerun by this benchmark: the table of `bench/staleness_accuracy.py` ([{name}.md]({name}.md), "
            f"curves in [{name}_curves.png]({name}_curves.png)). TGN and JODIE, batch 200, dims 100, lr 1e-3, "
            f"{config['epochs']} epochs, `exact` mode (batch j reads memory version max(0, j − s) whatever the "
            f"timing), tested at {selected}, seeds {seeds_in(recorded['runs'])} (the `seeds` column: how many "
            "per row): test AP ×100, mean ± std over seeds."
        ),
        "",
        *summary_table(recorded["runs"]),
        "",
        *staleness_targets(recorded["runs"]),
        "",
    ]


def render_markdown(
    rows: list[dict[str, Any]], emulation: list[dict[str, Any]], config: dict[str, Any], cuda: bool,
    staleness: list[str] | None = None,
) -> str:
    lines = [
        f"# MSPipe pipeline vs sequential training ({'GPU, part 3' if cuda else 'CPU, parts 1 and 2'})",
        "",
    ]
    batches = config["max_train_batches"] or "all"
    setup = (
        f"Data: {config['data']}; memory store in {config['memory_store']}; batch 600, 10 most recent neighbours, "
        f"dims 100, Adam lr 1e-4, dropout 0.1. Each run: {config['epochs']} epoch(s), {batches} training batches per "
        f"epoch (emulated rows: {config['emulate_batches']}); validation off during fit (test replays the validation "
        f"events into memory first); test AP with {config['data_module']['mrr_negatives']} fixed negative(s) per "
        f"event. {config['repeats']} run(s) per config, in rotated order; each table row is the run with the median "
        "events/s."
    )
    columns = (
        "Columns: `s in force`: the bound the pipeline ran with (`auto→s inline`: auto measured both and kept the "
        "stages inline, i.e. sequential); `×seq`, `×s0`: events/s relative to the same model's `seq` and `0` rows; "
        "`idle`: share of the epoch the training stage waited for its batch, from `PipelineStats` (it counts waits "
        "in threaded segments only, so an `auto→s inline` row shows ≈ 0 although its step waits τ1+τ2+τ3 inline; "
        "`seq`: (τ1+τ2+τ3)/iteration); `P`: "
        "P_model = max(τ1, τ2+τ3, τ4, τ5) in ms (stages 2 and 3 share the host→device link); `eff`: P_model / "
        "iteration time (1.0 is the limit); τ1…τ5 (ms): sample, fetch features, fetch memory, train "
        f"step, write memory, means over the last {WINDOW} batches (pipelined rows: the pipeline's profile; `seq`: the "
        "stages timed where the sequential loader and the model's writer run them, τ4 = the rest of the iteration); `iter`: ms per batch over the same batches; "
        "`stale`: mean staleness; `other`: share of the machine's CPU time other processes used during the "
        "run (a run above the threshold is redone, see `discarded_runs` in the JSON); `load`: 1-minute load "
        "average before the run (a trailing average that also counts this benchmark's own threads)."
    )
    lines += [
        f"Command: `{config['command']}` ({config['wall_s'] / 60:.1f} min); code: {config['git']}.",
        "",
        setup,
        "",
        columns,
        "",
    ]
    for part in sorted({r["part"] for r in rows}):
        part_rows = [r for r in rows if r["part"] == part]
        if part.startswith("2"):
            lat = part_rows[0]["emulated_latency_ms"]
            title = (
                f"## Part {part}: CPU, EMULATED transfers, {part_rows[0]['regime']} (+{lat[0]:.1f} / {lat[1]:.1f} ms "
                f"on the host→device link for stages 2 / 3, +{lat[2]:.1f} ms on the device→host link for stage 5, "
                "identical for every row)"
            )
            lines += [title, ""]
        else:
            lines += [f"## Part {part}: {'GPU' if cuda else 'CPU'}, real stage times", ""]
        lines += [table(part_rows), ""]
        for e in (e for e in emulation if e["part"] == part):
            lines.append(
                f"- EMULATED `{e['config']}`: speed-up over seq {e['speedup']:.2f}× (steady-state iteration times; "
                f"events/s ratio {fmt(e['events_per_s_ratio'], '.2f')}×) vs Στ/P_model = {e['ideal_speedup']:.2f}× "
                f"({e['speedup_share_of_ideal']:.0%} of it); efficiency P_model / iteration {e['efficiency']:.3f}."
            )
        for r in (r for r in part_rows if str(r["config"]).startswith("auto")):
            for c in r.get("choices", []):
                lines.append(
                    f"- {r['model']} `{r['config']}` choice: " + ", ".join(f"{k}={v}" for k, v in c.items())
                )
        lines += ["", "Every run:", "", spread_table(part_rows), ""]
    lines += ["## Targets", "", *target_checks(rows, emulation), ""]
    lines += staleness or []
    if not cuda:
        lines.append(
            "Part 3 (GPU) was not run here: no GPU in this session. Run `python bench/pipeline.py "
            "--device cuda` (or `bash bench/gpu_suite.sh`) on a GPU machine."
        )
    return "\n".join(lines) + "\n"


