"""Figures of the RNN backprop experiment (called by workflow/notebooks/rnn_backprop.ipynb)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ffsolve import plots
from ffsolve.plots import LOG_FLOOR, plot_band, plt

# The original's colours where it had the curve: feedforward (BPTT) red, Jacobi blue.
_SCAN_COLOURS = {"scan_hillis_steele": "tab:green", "scan_odd_even": "tab:olive"}
_CONVERGENCE_STYLE = {
    "sequential": ("BPTT (sequential)", "tab:red"),
    "jacobi": ("Jacobi", "tab:blue"),
    "scan_hillis_steele": ("scan (Hillis–Steele)", "tab:green"),
}


def load_runs(metrics_paths: Sequence[str], training_paths: Sequence[str]) -> list[dict]:
    """Each run's metrics with its training curves under ``"training"``, in the given order."""
    return plots.load_runs(metrics_paths, training_paths, key="training")


def run_label(run: dict) -> str:
    name = run["run"]
    if name == "sequential":
        text = "BPTT (sequential)"
    elif name.startswith("jacobi_k"):
        text = f"Jacobi, {run['max_iters']} iterations"
    elif name == "jacobi_tol":
        text = f"Jacobi, tol {run['tol']:g} (mean {run['iterations_train_mean']:.0f} it.)"
    else:
        text = f"scan, {run['scan_algorithm'].replace('_', '-')} ({run['iterations']} steps)"
    # Truncated Jacobi gives approximate gradients: say so where the curve is read.
    return text if run["exact_match"] else text + " [approx.]"


def run_colour(run: dict, budgets: Sequence[int]):
    name = run["run"]
    if name == "sequential":
        return "tab:red"
    if name.startswith("jacobi_k"):
        shades = plt.cm.Blues(np.linspace(0.45, 0.95, max(len(budgets), 1)))
        return shades[sorted(budgets).index(run["max_iters"])]
    if name == "jacobi_tol":
        return "tab:purple"
    return _SCAN_COLOURS.get(name, "tab:gray")


def loss_figure(runs: Sequence[dict], against: str = "time"):
    """Mean log EMA loss against wall-clock time or training steps (band: ±1 std over repeats).

    Time is each step's measured cumulative wall clock, averaged over repeats (the original's
    axis); nothing is estimated. Every run starts from the same weights and data, so the curves
    overlap on the step axis; only sequential BPTT's band is drawn, and the step figure adds a
    panel with each run's paired difference from sequential BPTT, where truncated gradients show.
    """
    if against not in ("time", "step"):
        raise ValueError(f"against must be 'time' or 'step', got {against!r}")
    budgets = [r["max_iters"] for r in runs if r["run"].startswith("jacobi_k")]
    sequential = next((r for r in runs if r["run"] == "sequential"), None)
    paired = against == "step" and sequential is not None
    fig, axes = plt.subplots(2 if paired else 1, 1, figsize=(7, 7 if paired else 4.5),
                             sharex=True, constrained_layout=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]} if paired else None)
    ax = axes[0, 0]
    for run in runs:
        curves = run["training"]
        log_loss = np.log(curves["ema_loss"])
        x = (curves["time_s"].mean(axis=0) if against == "time"
             else np.arange(1, log_loss.shape[1] + 1))
        style = dict(label=run_label(run), color=run_colour(run, budgets), linewidth=1.2)
        if run is sequential:
            plot_band(ax, x, log_loss.mean(axis=0), log_loss.std(axis=0), floor=-np.inf, **style)
        else:
            ax.plot(x, log_loss.mean(axis=0), **style)
        if paired:
            diff = log_loss - np.log(sequential["training"]["ema_loss"])
            axes[1, 0].plot(x, diff.mean(axis=0), color=style["color"], linewidth=1.0)
    first = runs[0]
    axes[-1, 0].set_xlabel("wall-clock time (s, cumulative, mean over repeats)"
                           if against == "time" else "training step")
    ax.set_ylabel("log EMA loss")
    ax.set_title(
        f"Vanilla RNN (hidden {first['hidden_size']}) on {first['dataset']}, T = "
        f"{first['sequence_length']}: {first['repeats']} repeats × {first['steps']} SGD steps, "
        f"lr {first['lr']:g}", fontsize="medium")
    ax.legend(fontsize="x-small", title="[approx.]: gradients not within rtol of autograd",
              title_fontsize="x-small")
    if paired:
        axes[1, 0].set_ylabel("log loss − BPTT's\n(same seeds, mean)")
        axes[1, 0].axhline(0.0, color="black", linewidth=0.5)
    for a in axes[:, 0]:
        a.grid(alpha=0.3)
    return fig


def convergence_figure(path: str):
    """Gradient L2 error per parallel step, at the start and at the end of training."""
    with np.load(path) as arrays:
        data = {key: arrays[key] for key in arrays.files}
    length = int(data["sequence_length"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, constrained_layout=True)
    for ax, phase, title in zip(axes, ("begin", "end"),
                                ("at initialisation", "after sequential training")):
        for method, (text, colour) in _CONVERGENCE_STYLE.items():
            errors = data.get(f"{phase}_{method}")
            if errors is None:
                continue
            steps = np.arange(errors.shape[0])
            plot_band(ax, steps, errors.mean(axis=1), errors.std(axis=1), label=text,
                      color=colour, marker="o" if len(steps) < 20 else None, markersize=3)
        ax.set_title(f"{title} (T = {length})", fontsize="medium")
        ax.set_xlabel("parallel steps (BPTT: time steps)")
        ax.set_yscale("log")
        ax.set_xlim(0, length)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"L2 error of all gradients (float64; 0 drawn at {LOG_FLOOR:g})")
    axes[0].legend(fontsize="small")
    return fig


def markdown_table(runs: Sequence[dict]) -> str:
    """Per run: parallel steps, backward and step time, final loss, exactness."""
    sequential = next((r for r in runs if r["run"] == "sequential"), None)
    rows = ["| run | steps per backward | backward (ms, median of training) | speedup | "
            "backward (ms, separate timing) | training step (ms, median) | final EMA loss | "
            "rel. error vs autograd | exact |",
            "|---|---|---|---|---|---|---|---|---|"]
    def backward_seconds(run):
        return run.get("backward_time_train_s", run["wall_time_s"])

    for run in runs:
        backward_s = backward_seconds(run)
        speedup = (f"{backward_seconds(sequential) / backward_s:.2f}×" if sequential else "n/a")
        rows.append(
            f"| {run['run']} | {run['iterations_train_mean']:.1f} | {1e3 * backward_s:.3g} "
            f"| {speedup} | {1e3 * run['wall_time_s']:.3g} | {1e3 * run['step_time_s']:.3g} | "
            f"{run['final_ema_loss_mean']:.4g} ± {run['final_ema_loss_std']:.2g} | "
            f"{run['rel_error_vs_autograd']:.2g} | {run['exact_match']} |"
        )
    return "\n".join(rows)
