"""Figure building blocks shared by the notebooks (kept here so tests reach them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

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


from ffsolve.kit.tables import label, runs_table  # noqa: E402,F401 - one label and table for every figure


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
