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
    """Each run's metrics (from the harness) with its training curves under ``"training"``."""
    return plots.load_runs(metrics_paths, training_paths, key="training")


def run_label(run: dict) -> str:
    """The run's name in words, marked where its gradients are approximate (not bitwise BPTT's
    and not within a declared rounding tolerance)."""
    name, method = run["run"], run["method"]
    if name == "sequential":
        text = "BPTT (sequential)"
    elif method == "jacobi" and run.get("budget"):
        text = f"Jacobi, {run['budget']} iterations"
    elif method == "jacobi":
        text = f"Jacobi to the end ({run['iterations']} it.)"
    elif method == "jacobi_tol":
        text = f"Jacobi, rel. tol {run['relative_tol']:g} ({run['iterations']} it.)"
    elif method.startswith("scan_"):
        text = f"scan, {method[5:].replace('_', '-')} ({run['iterations']} steps)"
    else:
        text = plots.label(run)
    exact = run["bitwise_equal"] or run.get("within_tolerance")
    return text if exact else text + " [approx.]"


def run_colour(run: dict, budgets: Sequence[int]):
    name = run["run"]
    if name == "sequential":
        return "tab:red"
    if run["method"] == "jacobi" and run.get("budget"):
        shades = plt.cm.Blues(np.linspace(0.45, 0.95, max(len(budgets), 1)))
        return shades[sorted(budgets).index(run["budget"])]
    if run["method"] == "jacobi":
        return "navy"
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
    budgets = [r["budget"] for r in runs if r["method"] == "jacobi" and r.get("budget")]
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
    first, meta = runs[0], runs[0]["training"]
    axes[-1, 0].set_xlabel("wall-clock time (s, cumulative, mean over repeats)"
                           if against == "time" else "training step")
    ax.set_ylabel("log EMA loss")
    ax.set_title(
        f"Vanilla RNN (hidden {int(meta['hidden_size'])}) on {first['dataset']}, T = "
        f"{int(meta['sequence_length'])}: {int(meta['repeats'])} repeats × {int(meta['steps'])} SGD "
        f"steps, lr {float(meta['lr']):g}", fontsize="medium")
    ax.legend(fontsize="x-small", title="[approx.]: adjoints not those of BPTT",
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
    """The harness table (one backward pass per run, timed in one process), then per run the
    gradients' distance from autograd's (float64) and the training curves' final loss."""
    lines = [plots.runs_table(runs), "",
             "| run | max abs diff of adjoints vs BPTT | gradient rel. error vs autograd (float64) "
             "| parallel steps per training step (mean) | final EMA loss (mean ± std over repeats) |",
             "|---|---|---|---|---|"]
    for run in runs:
        curves = run["training"]
        final = curves["ema_loss"][:, -1]
        lines.append(
            f"| {run['run']} | {run['max_abs_diff']:.3g} | {run['gradient_rel_error_vs_autograd']:.2g} "
            f"| {curves['iterations'].mean():.1f} | {final.mean():.4g} ± {final.std():.2g} |")
    return "\n".join(lines)
