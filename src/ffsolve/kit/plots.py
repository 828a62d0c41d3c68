"""Figure building blocks shared by the experiments' plots and the notebooks (matplotlib, Agg).

The tables and labels they show live in :mod:`ffsolve.kit.tables`; the workflow's own
cross-experiment figure rules are :mod:`ffsolve.workflow.figures`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_runs(metrics_paths: Sequence[str], array_paths: Sequence[str], key: str = "trace") -> list[dict]:
    """Each run's metrics with its ``.npz`` arrays under ``key``, in the given order."""
    if len(metrics_paths) != len(array_paths):
        raise ValueError(
            f"got {len(metrics_paths)} metrics files but {len(array_paths)} {key} files"
        )
    runs = []
    for metrics_path, array_path in zip(metrics_paths, array_paths):
        record = json.loads(Path(metrics_path).read_text())
        with np.load(array_path) as arrays:
            record[key] = {name: arrays[name] for name in arrays.files}
        runs.append(record)
    return runs

from ffsolve.kit.tables import label  # noqa: E402 - one label for every figure


LOG_FLOOR = 1e-12  # exact zeros are drawn here on log axes


def plot_band(ax, x, mean, std, floor=LOG_FLOOR, **kwargs):
    """A line with a ±std band, the paper's way of showing spread over a batch.

    Values are clipped at ``floor`` so that exact zeros (the converged tail) show on a log axis.
    """
    mean = np.clip(mean, floor, None)
    (line,) = ax.plot(x, mean, **kwargs)
    lower = np.clip(mean - std, floor, None)
    ax.fill_between(x, lower, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def convergence_figure(runs: Sequence[dict], title: str):
    """Error against the final iterate, against iterations and against measured time.

    The time axis places iteration k at k/iterations of the run's measured median wall time:
    the measured total, spread evenly over its iterations for drawing (the total is measured,
    not estimated).
    """
    fig, (by_iter, by_time) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for run in runs:
        trace = run["trace"]
        steps = np.arange(len(trace["error_mean"]))
        seconds = steps / max(run["iterations"], 1) * run["wall_time_s"]
        for ax, x in ((by_iter, steps), (by_time, seconds)):
            plot_band(ax, x, trace["error_mean"], trace["error_std"], label=label(run))
    by_iter.set_xlabel("parallel iterations (calls of f)")
    by_time.set_xlabel("wall-clock time (s, median of repeats)")
    for ax in (by_iter, by_time):
        ax.set_ylabel(f"L2 error to final iterate (0 drawn at {LOG_FLOOR:g})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    by_iter.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def save(fig, *paths: str) -> None:
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    plt.close(fig)


def speedups_figure(rows: Sequence[Mapping]):
    """Speedup over plain sequential, ours beside the paper's: one panel per experiment (small
    multiples), a horizontal bar pair per dataset and run, each panel as tall as its runs need so
    every label reads at 100 % zoom."""
    shown = [r for r in rows if r["method"] != "sequential"
             and (r.get("x_sequential") or r.get("paper_x_sequential"))]
    experiments = sorted({r["experiment"] for r in shown})
    if not experiments:
        fig, ax = plt.subplots(figsize=(6, 2), constrained_layout=True)
        ax.text(0.5, 0.5, "no run with a speedup over sequential", ha="center", va="center")
        ax.set_axis_off()
        return fig
    counts = [sum(r["experiment"] == e for r in shown) for e in experiments]
    fig, axes = plt.subplots(len(experiments), 1, figsize=(7.5, sum(0.24 * n + 1.0 for n in counts)),
                             height_ratios=[0.24 * n + 1.0 for n in counts], squeeze=False,
                             constrained_layout=True)
    for ax, experiment in zip(axes[:, 0], experiments):
        mine = [r for r in shown if r["experiment"] == experiment]
        y = np.arange(len(mine))
        ax.barh(y - 0.2, [r.get("x_sequential") or 0 for r in mine], height=0.4, label="ours (measured)")
        ax.barh(y + 0.2, [r.get("paper_x_sequential") or 0 for r in mine], height=0.4,
                label="paper (reported)")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(y, [f"{r['dataset']} · {r['label']}{_tol_note(r.get('run'))}" for r in mine],
                      fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(experiment, loc="left", fontsize=10)
        ax.set_xlabel("speedup over sequential (×, log)", fontsize=8)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    return fig


def _tol_note(run) -> str:
    """", tol 1e-04" for a run that stops at a tolerance, "" for an exact one."""
    from ffsolve.kit.runs import parse_run_name

    if not run:  # a paper-only row
        return ""
    spec = parse_run_name(run)
    return f", tol {spec.tol:g}" if spec.tol else ""


def frontier_figure(panels: Sequence):
    """Parallel steps (left) and wall time (right) against max |diff| from sequential, one row of
    axes per experiment and dataset, one line per method; tolerances written at the points."""
    from ffsolve.kit.frontier import DIFF_FLOOR, plotted_diff

    if not panels:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no frontier runs configured (frontier_tols of made, pixelcnnpp, rnn_forward)",
                ha="center", va="center")
        return fig
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.6 * len(panels)), squeeze=False,
                             constrained_layout=True)
    for (by_steps, by_time), panel in zip(axes, panels):
        for index, (line, points) in enumerate(panel.lines.items()):
            color = f"C{index % 10}"
            xs = [plotted_diff(p) for p in points]
            for ax, ys in ((by_steps, [p.iterations for p in points]), (by_time, [p.wall_time_s for p in points])):
                ax.plot(xs, ys, marker="o", color=color, label=line)
                for k, (point, x, y) in enumerate(zip(points, xs, ys)):
                    text = "exact" if point.tol == 0 else f"tol {point.tol:g}"
                    # alternate above and below: points at one difference (bitwise ones) stay legible
                    ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4 if k % 2 == 0 else -9),
                                fontsize=6, color=color)
        by_steps.axhline(panel.sequence_length, color="k", linestyle="--", linewidth=0.8,
                         label=f"sequential: T = {panel.sequence_length}")
        if panel.sequential_s is not None:
            by_time.axhline(panel.sequential_s, color="k", linestyle="--", linewidth=0.8,
                            label=f"sequential: {panel.sequential_s:.3g} s")
        for ax in (by_steps, by_time):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.set_xlabel(f"max |x - sequential| (bitwise equal drawn at {DIFF_FLOOR:g})")
        by_steps.set_ylabel("parallel steps")
        by_time.set_ylabel("wall time (s, median, one timing session)")
        by_steps.set_title(f"{panel.experiment} / {panel.dataset}: steps")
        by_time.set_title(f"{panel.experiment} / {panel.dataset}: time")
        by_steps.legend(fontsize="x-small")
        by_time.legend(fontsize="x-small")
    return fig
