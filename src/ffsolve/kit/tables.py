"""Labels, speedups and tables, built once for every experiment, the notebooks and
``figures/speedups.md``.

A speedup is a ratio of two median times from one harness session (one process, repeats
interleaved); :func:`speedup` refuses any other pair. Exactness is shown in two columns that never
mix: ``bitwise`` (equal to the sequential result bit for bit) and ``within tol.`` (only for paths
that cannot be bitwise, under the rule their record states).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import yaml

BASELINES = ("sequential", "sequential_cache")


def _get(row: Mapping, key: str, default=""):
    value = row.get(key, default)
    return default if value is None else value


def label(record: Mapping) -> str:
    """``gs_jacobi (block 16)``, ``jacobi (≤ 10 steps)``, ``jacobi``."""
    parts = []
    if _get(record, "block_size") != "":
        parts.append(f"block {record['block_size']}")
    if _get(record, "budget") != "":
        parts.append(f"≤ {record['budget']} steps")
    return record["method"] + (f" ({', '.join(parts)})" if parts else "")


def _session(row: Mapping) -> str:
    timing = row.get("timing")
    if isinstance(timing, Mapping):
        return str(timing.get("session", ""))
    return str(_get(row, "timing_session"))


def speedup(baseline: Mapping, row: Mapping) -> Optional[float]:
    """``baseline`` time / ``row`` time, only when both were timed in the same harness session."""
    if not baseline or not _session(baseline) or _session(baseline) != _session(row):
        return None
    time, base = float(row["wall_time_s"]), float(baseline["wall_time_s"])
    return base / time if time > 0 else None


def _flag(value) -> str:
    if value in ("", None):
        return ""
    return "yes" if str(value).lower() == "true" else "no"


def _fmt(value, spec: str) -> str:
    return "" if value in (None, "") else format(float(value), spec)


def baselines_by_group(rows: Iterable[Mapping]) -> dict[tuple, dict[str, Mapping]]:
    groups: dict[tuple, dict[str, Mapping]] = defaultdict(dict)
    for row in rows:
        if row["method"] in BASELINES and _get(row, "budget") == "" and _get(row, "block_size") == "":
            groups[(row["experiment"], row["dataset"])][row["method"]] = row
    return groups


def runs_table(records: Sequence[Mapping]) -> str:
    """One experiment's runs (metrics records or summary rows): the notebooks' table."""
    base = baselines_by_group(records)
    lines = [
        "| run | iterations / T | network evals | time (s, median ± IQR) | × sequential | "
        "× cached seq. | bitwise | within tol. | converged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        group = base[(r["experiment"], r["dataset"])]
        iqr = r["timing"]["iqr_s"] if isinstance(r.get("timing"), Mapping) else _get(r, "wall_time_iqr_s")
        lines.append(
            f"| {label(r)} | {r['iterations']} / {r['sequence_length']} | "
            f"{_fmt(r['network_evaluations'], '.4g')} | {_fmt(r['wall_time_s'], '.4g')} ± {_fmt(iqr, '.2g')} | "
            f"{_fmt(speedup(group.get('sequential'), r), '.2f')} | "
            f"{_fmt(speedup(group.get('sequential_cache'), r), '.2f')} | {_flag(r['bitwise_equal'])} | "
            f"{_flag(_get(r, 'within_tolerance'))} | {_flag(r['converged'])} |"
        )
    return "\n".join(lines) + "\n"


def load_paper(path: str | Path) -> list[dict]:
    with open(path) as handle:
        rows = yaml.safe_load(handle)
    for row in rows:
        missing = {"experiment", "dataset", "method", "time_s"} - set(row)
        if missing:
            raise ValueError(f"{path}: entry {row} lacks {sorted(missing)}")
    return rows


def side_by_side(ours: Iterable[Mapping], paper: Iterable[Mapping]) -> list[dict]:
    """One row per run of ours and per paper entry; a paper entry sits beside every run of ours
    with the same experiment, dataset and method. Our ratios come from our times (same session),
    the paper's from its own; they are never mixed."""
    ours, paper = list(ours), list(paper)
    our_base = baselines_by_group(ours)
    paper_base: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in paper:
        if row["method"] in BASELINES:
            paper_base[(row["experiment"], row["dataset"])][row["method"]] = float(row["time_s"])

    merged: dict[tuple, dict] = {}
    for row in ours:
        group = our_base[(row["experiment"], row["dataset"])]
        merged[(row["experiment"], row["dataset"], row["method"], row["run"])] = {
            "experiment": row["experiment"], "dataset": row["dataset"], "method": row["method"],
            "run": row["run"], "label": label(row),
            "iterations": row["iterations"], "sequence_length": row["sequence_length"],
            "network_evaluations": row["network_evaluations"],
            "time_s": float(row["wall_time_s"]),
            "x_sequential": speedup(group.get("sequential"), row),
            "x_cache": speedup(group.get("sequential_cache"), row),
            "bitwise": _flag(row["bitwise_equal"]),
            "within_tolerance": _flag(_get(row, "within_tolerance")),
            "device": row["device"],
        }
    for row in paper:
        key = (row["experiment"], row["dataset"], row["method"])
        base = paper_base[key[:2]]
        time = float(row["time_s"])
        cols = {
            "paper_iterations": _get(row, "iterations"), "paper_time_s": time,
            "paper_x_sequential": base["sequential"] / time if "sequential" in base else None,
            "paper_x_cache": base["sequential_cache"] / time if "sequential_cache" in base else None,
            "paper_note": _get(row, "note"),
        }
        matches = [k for k in merged if k[:3] == key]
        if not matches:
            merged[key + ("",)] = {"experiment": key[0], "dataset": key[1], "method": key[2],
                                   "run": "", "label": f"{key[2]} (paper only)"}
            matches = [key + ("",)]
        for match in matches:
            merged[match].update(cols)
    order = {"sequential": 0, "sequential_cache": 1}
    return sorted(merged.values(), key=lambda r: (r["experiment"], r["dataset"],
                                                  order.get(r["method"], 2), r["method"], r["run"]))


def speedups_markdown(rows: Sequence[Mapping]) -> str:
    lines = [
        "# Our measurements beside the original's",
        "",
        "Ours: medians of timed repeats; every run of one experiment and dataset was timed in one "
        "process, repeats interleaved, on the same weights and noise, and each speedup divides two "
        "times of that process. **bitwise**: the output of the timed program equals the sequential "
        "one bit for bit. **within tol.**: only for paths that cannot be bitwise (other shapes or "
        "summation order); the rule and its reason are in the run's metrics.json. Iterations are "
        "parallel steps; network evals count the work in full-network passes. Paper: the authors' "
        "reported values (Song et al. 2021; hardware not stated), see "
        "`workflow/resources/paper_numbers.yaml` for how each was obtained.",
        "",
        "| experiment | dataset | run | iters / T | network evals | time (s) | ×seq | ×cache | "
        "bitwise | within tol. | device | paper iters | paper time (s) | paper ×seq | "
        "paper ×cache | paper note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        iters = f"{r['iterations']} / {r['sequence_length']}" if r.get("iterations") not in (None, "") else ""
        lines.append(
            f"| {r['experiment']} | {r['dataset']} | {r['label']} | {iters} | "
            f"{_fmt(r.get('network_evaluations'), '.4g')} | {_fmt(r.get('time_s'), '.4g')} | "
            f"{_fmt(r.get('x_sequential'), '.2f')} | {_fmt(r.get('x_cache'), '.2f')} | "
            f"{r.get('bitwise', '')} | {r.get('within_tolerance', '')} | {r.get('device', '')} | "
            f"{r.get('paper_iterations', '')} | {_fmt(r.get('paper_time_s'), '.4g')} | "
            f"{_fmt(r.get('paper_x_sequential'), '.2f')} | {_fmt(r.get('paper_x_cache'), '.2f')} | "
            f"{r.get('paper_note', '')} |"
        )
    return "\n".join(lines) + "\n"


def speedups_figure(rows: Sequence[Mapping]):
    """Speedup over plain sequential, ours beside the paper's, per experiment/dataset/run."""
    from ffsolve import plots  # noqa: F401 - selects the Agg backend
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [r for r in rows if r["method"] != "sequential"
             and (r.get("x_sequential") or r.get("paper_x_sequential"))]
    labels = [f"{r['experiment']}/{r['dataset']}\n{r['label']}" for r in shown]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(shown) + 2), 4.5), constrained_layout=True)
    x = np.arange(len(shown))
    ax.bar(x - 0.2, [r.get("x_sequential") or 0 for r in shown], width=0.4, label="ours (measured)")
    ax.bar(x + 0.2, [r.get("paper_x_sequential") or 0 for r in shown], width=0.4, label="paper (reported)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=70, fontsize=7)
    ax.set_ylabel("speedup over sequential (×)")
    ax.set_yscale("log")
    ax.legend()
    return fig


def write_speedups(summary_csv: str, paper_yaml: str, markdown_out: str, *figure_out: str) -> list[dict]:
    """The ``speedups`` rule: ``figures/speedups.md`` and its figure from ``results/summary.csv``."""
    from ffsolve.kit.io import write_text
    from ffsolve.kit.record import read_summary
    from ffsolve.plots import save

    rows = side_by_side(read_summary(summary_csv), load_paper(paper_yaml))
    write_text(markdown_out, speedups_markdown(rows))
    save(speedups_figure(rows), *figure_out)
    return rows
