"""Figures of the RNN backprop experiment (called by workflow/notebooks/rnn_backprop.ipynb)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ffsolve.kit import LOG_FLOOR, label, plot_band, plt, runs_table
from ffsolve.kit import load_runs as load_records

# The original's colours where it had the curve: feedforward (BPTT) red, Jacobi blue.
_SCAN_COLOURS = {"scan_hillis_steele": "tab:green", "scan_odd_even": "tab:olive"}
_CONVERGENCE_STYLE = {
    "sequential": ("BPTT (sequential)", "tab:red"),
    "jacobi": ("Jacobi", "tab:blue"),
    "scan_hillis_steele": ("scan (Hillis–Steele)", "tab:green"),
}


def load_runs(metrics_paths: Sequence[str], trace_paths: Sequence[str]) -> list[dict]:
    """Each run's metrics (from the harness) with its training curves (its ``trace.npz``: the
    timed calls' losses and clocks) under ``"training"``."""
    return load_records(metrics_paths, trace_paths, key="training")


def run_label(run: dict) -> str:
    """The run's name in words, marked where its result is approximate (not bitwise BPTT's and
    not within a declared rounding tolerance). Parallel steps are per backward pass: the mean
    over the training where the record has it."""
    name, method = run["run"], run["method"]
    steps = run.get("backward_iterations_mean")
    steps = f"{steps:.0f}" if steps is not None else str(run["iterations"])
    if name == "sequential":
        text = "BPTT (sequential)"
    elif method == "jacobi" and run.get("budget"):
        text = f"Jacobi, {run['budget']} iterations"
    elif method == "jacobi":
        text = f"Jacobi to the end ({steps} it.)"
    elif method == "jacobi_tol":
        text = f"Jacobi, rel. tol {run['relative_tol']:g} ({steps} it.)"
    elif method.startswith("scan_"):
        text = f"scan, {method[5:].replace('_', '-')} ({run['iterations']} steps)"
    else:
        text = label(run)
    # A run whose backward passes did not all converge (a truncated budget) is inexact.
    exact = run["converged"] and (run["bitwise_equal"] or run.get("within_tolerance"))
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
    """Log EMA loss against the measured wall clock of training, or against training steps.

    The curves are those of the timed runs: every run trains from the same weights on the same
    data order, its losses are the same in every timed repeat (checked), and the time of step k
    is the cumulative clock of the timed calls at step k (mean over the repeats; the band on the
    time axis would be their spread). The dashed line is BPTT's final EMA loss, the target of
    ``time_to_target_s``; a dot marks where each run first reaches it. The step figure adds a
    panel with each run's difference from BPTT's log loss, where truncated gradients show.
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
        steps = np.arange(1, log_loss.shape[0] + 1)
        x = curves["time_s"].mean(axis=0) if against == "time" else steps
        style = {"label": run_label(run), "color": run_colour(run, budgets), "linewidth": 1.2}
        ax.plot(x, log_loss, **style)
        reach = run.get("target_step")
        if reach:
            ax.plot(x[reach - 1], log_loss[reach - 1], "o", color=style["color"], markersize=4)
        if paired:
            diff = log_loss - np.log(sequential["training"]["ema_loss"])
            axes[1, 0].plot(x, diff, color=style["color"], linewidth=1.0)
    if sequential is not None:
        ax.axhline(np.log(sequential["final_ema_loss"]), color="black", linestyle="--",
                   linewidth=0.6, label="target: BPTT's final EMA loss")
    first, meta = runs[0], runs[0]["training"]
    axes[-1, 0].set_xlabel(
        f"wall-clock time of training (s, cumulative, mean of {meta['time_s'].shape[0]} timed "
        "repeats, all runs in one process)" if against == "time" else "training step")
    ax.set_ylabel("log EMA loss")
    ax.set_title(
        f"Vanilla RNN (hidden {int(meta['hidden_size'])}) on {first['dataset']}, T = "
        f"{int(meta['sequence_length'])}: {int(meta['steps'])} SGD steps, lr {float(meta['lr']):g}, "
        f"batch {first['batch']}", fontsize="medium")
    ax.legend(fontsize="x-small", title="[approx.]: weights not those of BPTT",
              title_fontsize="x-small")
    if paired:
        axes[1, 0].set_ylabel("log loss − BPTT's\n(same weights and data)")
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


def _seconds(value) -> str:
    return "never" if value is None else f"{value:.3g}"


def markdown_table(runs: Sequence[dict]) -> str:
    """The harness table (training of ``steps`` SGD steps per run, timed in one process), then
    per run the time to BPTT's final EMA loss, the final loss and its gap, the backward passes'
    parallel steps and the first step's gradients against autograd's (float64)."""
    sequential = next((r for r in runs if r["run"] == "sequential"), None)
    lines = [runs_table(runs), "",
             ("| run | time to BPTT's final EMA loss (s) | × BPTT (time to target) | final EMA loss "
              "| gap to BPTT | parallel steps per backward pass (mean / max) "
              "| gradient rel. error vs autograd (float64, first step) |"),
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        reach, ratio = run.get("time_to_target_s"), "–"
        if reach and sequential is not None and sequential.get("time_to_target_s"):
            ratio = f"{sequential['time_to_target_s'] / reach:.2f}"
        lines.append(
            f"| {run['run']} | {_seconds(reach)} | {ratio} | {run['final_ema_loss']:.5g} "
            f"| {run['final_ema_loss_gap']:+.3g} | {run['backward_iterations_mean']:.1f} / "
            f"{run['iterations']} | {run['gradient_rel_error_vs_autograd']:.2g} |")
    return "\n".join(lines)
