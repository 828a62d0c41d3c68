"""The DenseNet figure and table (the notebook workflow/notebooks/densenet.ipynb calls these)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ffsolve.kit import LOG_FLOOR, auto_text, label, plt


def _median_band(ax, x, values, **kwargs):
    """Median over images with a 10-90 % band (a ±std band is meaningless on a log axis)."""
    values = np.clip(values, LOG_FLOOR, None)
    (line,) = ax.plot(x, np.median(values, axis=1), **kwargs)
    low, high = np.percentile(values, [10, 90], axis=1)
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    return line


def _title(runs: Sequence[dict]) -> str:
    first = runs[0]
    title = (f"{first['label']}: {first['sequence_length']} dense layers, "
             f"{first['images']} image(s), {first['device']}")
    if first.get("speed_only"):
        title = "SPEED ONLY (random weights, random inputs; predictions meaningless)\n" + title
    return title


def step_seconds(run: dict) -> np.ndarray:
    """Seconds at which iterate k = 0..iterations is reached, at the run's measured median time
    per parallel step (the timed program has no clock inside; its total is measured)."""
    steps = int(run["iterations"])
    return np.arange(steps + 1) * (float(run["wall_time_s"]) / steps)


def _label(run: dict) -> str:
    if run.get("quantity") == "time_to_top5":
        return f"{label(run)}: stops when top-5 unchanged {run.get('top5_patience')} steps"
    return label(run)


def figure(runs: Sequence[dict]):
    """Logit error and top-5 disagreement against parallel steps and time."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for run in runs:
        trace = run["trace"]
        steps = np.arange(int(run["iterations"]) + 1)
        seconds = step_seconds(run)
        error = trace["logit_error"]
        disagree = trace["top5_mismatch"].mean(axis=1)
        early = run.get("quantity") == "time_to_top5"
        style = {"linestyle": "--", "linewidth": 2.2} if early else {}
        for column, x in enumerate((steps, seconds)):
            # The time panel is on a log axis (the methods' times differ by an order of magnitude
            # on a CPU), so it starts at the first step, not at t = 0.
            keep = slice(None) if column == 0 else slice(1, None)
            line = _median_band(axes[0, column], x[keep], error[keep], label=_label(run), **style)
            axes[1, column].plot(x[keep], disagree[keep], color=line.get_color(), label=_label(run),
                                 **style)
            if early:  # where the timed rule stopped (its own steps and measured time)
                axes[1, column].plot(x[-1], disagree[-1], "o", color=line.get_color(), markersize=7)
        stable = run.get("stable_top5_iteration")
        if stable is not None and not early:
            axes[1, 0].axvline(stable, color=line.get_color(), linestyle=":", alpha=0.7)
    for column, xlabel in enumerate(("parallel steps (batched layer calls)",
                                     "time (s, log): step k at k x measured median time per step")):
        axes[0, column].set_yscale("log")
        axes[0, column].set_ylabel("L2 error of logits vs forward pass\n(median, 10-90% of images)")
        axes[1, column].set_ylabel("fraction of images whose top-5 differs\nfrom the forward pass's")
        axes[1, column].set_xlabel(xlabel)
        for row in range(2):
            axes[row, column].grid(alpha=0.3)
    for row in range(2):
        axes[row, 1].set_xscale("log")
    axes[1, 0].legend(fontsize="small", title="dotted: top-5 equal to the forward pass's from here\n"
                      "(trace analysis, an oracle; not timed)", title_fontsize="small")
    axes[1, 1].set_title("dot: jacobi_top5's timed stop (its rule never sees the forward pass)",
                         fontsize="small")
    fig.suptitle(_title(runs), fontsize="medium")
    return fig


def _flag(value) -> str:
    return "" if value is None else ("yes" if value else "no")


def _within(run: dict) -> str:
    """A run stopped before the fixed point is inexact, whatever its distance; a converged run
    says whether it is within its declared logit tolerance (none for the top-5 run)."""
    return "inexact" if not run["converged"] else _flag(run.get("within_tolerance"))


def _agreement(run: dict, k: int) -> str:
    """Fraction of images whose top-k at the run's output equals the forward pass's."""
    field = {5: "top5_match_fraction", 1: "top1_match_fraction"}[k]
    if run.get(field) is not None:
        return f"{run[field]:.2f}"
    mismatch = run.get("trace", {}).get(f"top{k}_mismatch")
    return "" if mismatch is None else f"{1.0 - float(np.mean(mismatch[-1])):.2f}"


def _speed(sequential, run) -> str:
    if sequential is None:
        return "n/a"
    return f"{sequential['wall_time_s'] / run['wall_time_s']:.2f}x"


def table(runs: Sequence[dict]) -> str:
    """Steps, measured times and speedups against the forward pass (all from one session)."""
    rows = [
        ("| run | timed quantity | steps (of T) | network evals | time (s) | × forward "
         "| top-5 = forward | top-1 = forward | max abs logit diff | bitwise | within tol. "
         "| top-5 = forward from step (trace analysis) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sequential = next((r for r in runs if r["method"] == "sequential"), None)
    for run in runs:
        quantity = run.get("quantity") or "solve"
        if quantity == "time_to_top5":
            quantity = f"time to top-5 unchanged for {run.get('top5_patience')} steps"
        elif run["method"] == "sequential":
            quantity = "forward pass"
        else:
            quantity = "solve to the fixed point"
        rows.append(
            f"| {label(run)} | {quantity} | {run['iterations']} ({run['sequence_length']}) "
            f"| {run['network_evaluations']:.3g} "
            f"| {run['wall_time_s']:.4g}{auto_text(run)} | {_speed(sequential, run)} "
            f"| {_agreement(run, 5)} | {_agreement(run, 1)} "
            f"| {run['max_abs_diff']:.2g} | {_flag(run['bitwise_equal'])} "
            f"| {_within(run)} | {run.get('stable_top5_iteration')} |"
        )
    first = runs[0]
    tolerance = next((r["tolerance"] for r in runs if r.get("tolerance")), None)
    early = next((r for r in runs if r.get("quantity") == "time_to_top5"), None)
    rows.append("")
    rows.append(
        f"{_title(runs)}. Times: median of {first['timing']['repeats']} timed repeats after "
        f"{first['timing']['warmup']} warm-up, every run in one process with repeats interleaved; "
        "sequential = the model's own forward pass (the reference of every comparison). "
        "top-k = forward: fraction of images whose descending top-k list at the run's output "
        "equals the forward pass's."
        + ("" if early is None else f" {label(early)} {early.get('stop_rule', '')}; its time "
           "includes the rule (a readout of the logits after every step). Its accuracy is its "
           "top-5 agreement with the forward pass, not a logit tolerance; stopped before the "
           "fixed point, it is inexact.")
        + " The last column is a trace analysis of the untimed traced run (the step from which "
        "every image's top-5 stays equal to the forward pass's: an oracle's stop, as in the "
        "paper's estimate), not a timed result."
        + ("" if tolerance is None else f" within tol.: {tolerance['rule']} ({tolerance['why']})")
    )
    return "\n".join(rows)
