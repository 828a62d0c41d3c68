"""Our measured runs beside the original's reported numbers (``figures/speedups.md`` and a figure).

Speedups are ratios of wall-clock times measured in the same experiment and dataset (ours: in one
job each, same weights and noise; the paper's: from the authors' notebooks). Both are given
against plain ``sequential`` and, where that baseline exists (PixelCNN++), against
``sequential_cache``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

import yaml

BASELINES = ("sequential", "sequential_cache")


def read_summary(path: str | Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def load_paper(path: str | Path) -> list[dict]:
    with open(path) as handle:
        rows = yaml.safe_load(handle)
    for row in rows:
        missing = {"experiment", "dataset", "method", "time_s"} - set(row)
        if missing:
            raise ValueError(f"{path}: entry {row} lacks {sorted(missing)}")
    return rows


def _float(value) -> Optional[float]:
    return None if value in (None, "") else float(value)


def _ratio(baseline: Optional[float], time: Optional[float]) -> Optional[float]:
    return baseline / time if baseline and time else None


def side_by_side(ours: Iterable[dict], paper: Iterable[dict]) -> list[dict]:
    """One row per (experiment, dataset, method[, block]) present in either source."""
    ours, paper = list(ours), list(paper)
    our_base = defaultdict(dict)
    for row in ours:
        if row["method"] in BASELINES:
            our_base[(row["experiment"], row["dataset"])][row["method"]] = _float(row["wall_time_s"])
    paper_base = defaultdict(dict)
    for row in paper:
        if row["method"] in BASELINES:
            paper_base[(row["experiment"], row["dataset"])][row["method"]] = row["time_s"]

    merged: dict[tuple, dict] = {}
    for row in ours:
        key = (row["experiment"], row["dataset"], row["method"])
        block = row.get("block_size") or ""
        run = row.get("run") or key[2]
        base = our_base[key[:2]]
        time = _float(row["wall_time_s"])
        merged[key + (run,)] = {
            "experiment": key[0], "dataset": key[1], "method": key[2], "block_size": block,
            "run": run,
            "iterations": row["iterations"], "sequence_length": row["sequence_length"],
            "time_s": time, "x_sequential": _ratio(base.get("sequential"), time),
            "x_cache": _ratio(base.get("sequential_cache"), time),
            "exact_match": row["exact_match"], "device": row["device"],
        }
    for row in paper:
        key = (row["experiment"], row["dataset"], row["method"])
        base = paper_base[key[:2]]
        paper_cols = {
            "paper_iterations": row.get("iterations", ""), "paper_time_s": row["time_s"],
            "paper_x_sequential": _ratio(base.get("sequential"), row["time_s"]),
            "paper_x_cache": _ratio(base.get("sequential_cache"), row["time_s"]),
            "paper_note": row.get("note", ""),
        }
        matches = [k for k in merged if k[:3] == key]
        if not matches:
            merged[key + ("",)] = {"experiment": key[0], "dataset": key[1], "method": key[2],
                                   "block_size": "", "run": ""}
            matches = [key + ("",)]
        for match in matches:
            merged[match].update(paper_cols)
    order = {"sequential": 0, "sequential_cache": 1}
    return sorted(
        merged.values(),
        key=lambda r: (r["experiment"], r["dataset"], order.get(r["method"], 2), r["method"],
                       int(r["block_size"] or 0), r["run"]),
    )


def _fmt(value, spec: str) -> str:
    return "" if value in (None, "") else format(float(value), spec)


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "# Our measurements beside the original's",
        "",
        "Ours: medians of timed repeats, stopping inside the loop, `exact` = the result equals the "
        "sequential one on the same weights and noise; the machine is in the `device` column. "
        "Paper: the authors' reported values (Song et al. 2021, their notebooks; hardware not "
        "stated), see `workflow/resources/paper_numbers.yaml` for how each was obtained. "
        "×seq and ×cache are speedups against plain and cached sequential evaluation.",
        "",
        "| experiment | dataset | run | block | iters / T | time (s) | ×seq | ×cache | exact | "
        "device | paper iters | paper time (s) | paper ×seq | paper ×cache | paper note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        iters = f"{r['iterations']} / {r['sequence_length']}" if r.get("iterations") else ""
        lines.append(
            f"| {r['experiment']} | {r['dataset']} | {r.get('run') or r['method']} | {r.get('block_size', '')} | "
            f"{iters} | {_fmt(r.get('time_s'), '.4g')} | {_fmt(r.get('x_sequential'), '.2f')} | "
            f"{_fmt(r.get('x_cache'), '.2f')} | {r.get('exact_match', '')} | {r.get('device', '')} | "
            f"{r.get('paper_iterations', '')} | {_fmt(r.get('paper_time_s'), '.4g')} | "
            f"{_fmt(r.get('paper_x_sequential'), '.2f')} | {_fmt(r.get('paper_x_cache'), '.2f')} | "
            f"{r.get('paper_note', '')} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict]):
    """Speedup over plain sequential, ours beside the paper's, per experiment/dataset/method."""
    from ffsolve import plots  # noqa: F401 - selects the Agg backend
    import matplotlib.pyplot as plt
    import numpy as np

    shown = [r for r in rows if r["method"] != "sequential"
             and (r.get("x_sequential") or r.get("paper_x_sequential"))]
    labels = [f"{r['experiment']}/{r['dataset']}\n{r.get('run') or r['method']}" for r in shown]
    ours = [r.get("x_sequential") or 0 for r in shown]
    theirs = [r.get("paper_x_sequential") or 0 for r in shown]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(shown) + 2), 4.5), constrained_layout=True)
    x = np.arange(len(shown))
    ax.bar(x - 0.2, ours, width=0.4, label="ours (measured)")
    ax.bar(x + 0.2, theirs, width=0.4, label="paper (reported)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=70, fontsize=7)
    ax.set_ylabel("speedup over sequential (×)")
    ax.set_yscale("log")
    ax.legend()
    return fig


def write_report(summary_csv: str, paper_yaml: str, markdown_out: str, *figure_out: str) -> list[dict]:
    from ffsolve.plots import save

    rows = side_by_side(read_summary(summary_csv), load_paper(paper_yaml))
    Path(markdown_out).parent.mkdir(parents=True, exist_ok=True)
    Path(markdown_out).write_text(to_markdown(rows))
    save(figure(rows), *figure_out)
    return rows
