"""The DenseNet figure and table (the notebook workflow/notebooks/densenet.ipynb calls these)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ffsolve.plots import LOG_FLOOR, label, plt


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


def figure(runs: Sequence[dict]):
    """Logit error and top-5 disagreement against parallel steps and time."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for run in runs:
        trace = run["trace"]
        steps = np.arange(int(run["iterations"]) + 1)
        seconds = step_seconds(run)
        error = trace["logit_error"]
        disagree = trace["top5_mismatch"].mean(axis=1)
        for column, x in enumerate((steps, seconds)):
            # The time panel is on a log axis (the methods' times differ by an order of magnitude
            # on a CPU), so it starts at the first step, not at t = 0.
            keep = slice(None) if column == 0 else slice(1, None)
            line = _median_band(axes[0, column], x[keep], error[keep], label=label(run))
            axes[1, column].plot(x[keep], disagree[keep], color=line.get_color(), label=label(run))
        stable = run.get("stable_top5_iteration")
        if stable is not None:
            axes[1, 0].axvline(stable, color=line.get_color(), linestyle=":", alpha=0.7)
        if run.get("wall_time_top5_s"):
            axes[1, 1].axvline(run["wall_time_top5_s"], color=line.get_color(), linestyle=":", alpha=0.7)
    for column, xlabel in enumerate(("parallel steps (batched layer calls)",
                                     "time (s, log): step k at k x measured median time per step")):
        axes[0, column].set_yscale("log")
        axes[0, column].set_ylabel("L2 error of logits vs forward pass\n(median, 10-90% of images)")
        axes[1, column].set_ylabel("fraction of images whose top-5 differs")
        axes[1, column].set_xlabel(xlabel)
        for row in range(2):
            axes[row, column].grid(alpha=0.3)
    for row in range(2):
        axes[row, 1].set_xscale("log")
    axes[1, 0].legend(fontsize="small", title="dotted: top-5 stays equal from here")
    axes[1, 1].set_title("dotted: measured time of the run stopped there", fontsize="small")
    fig.suptitle(_title(runs), fontsize="medium")
    return fig


def _flag(value) -> str:
    return "" if value is None else ("yes" if value else "no")


def table(runs: Sequence[dict]) -> str:
    """Steps, measured times and speedups against the forward pass (all from one session)."""
    rows = [
        "| run | steps (of T) | network evals | stable top-1 from | stable top-5 from "
        "| time to exact (s) | × forward | time to stable top-5 (s) | × forward "
        "| max abs logit diff | bitwise | within tol. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sequential = next((r for r in runs if r["method"] == "sequential"), None)
    for run in runs:
        def speed(key):
            if sequential is None or run.get(key) is None:
                return "n/a"
            return f"{sequential['wall_time_s'] / run[key]:.2f}x"

        top5 = run.get("wall_time_top5_s")
        rows.append(
            f"| {label(run)} | {run['iterations']} ({run['sequence_length']}) "
            f"| {run['network_evaluations']:.3g} "
            f"| {run.get('stable_top1_iteration')} | {run.get('stable_top5_iteration')} "
            f"| {run['wall_time_s']:.4g} | {speed('wall_time_s')} "
            f"| {'n/a' if top5 is None else f'{top5:.4g}'} | {speed('wall_time_top5_s')} "
            f"| {run['max_abs_diff']:.2g} | {_flag(run['bitwise_equal'])} "
            f"| {_flag(run.get('within_tolerance'))} |"
        )
    first = runs[0]
    tolerance = next((r["tolerance"] for r in runs if r.get("tolerance")), None)
    rows.append("")
    rows.append(
        f"{_title(runs)}. Times: median of {first['timing']['repeats']} timed repeats after "
        f"{first['timing']['warmup']} warm-up, every run in one process with repeats interleaved; "
        "sequential = the ordinary forward pass (it cannot stop early, so both of its times are "
        "the same run)."
        + ("" if tolerance is None else f" within tol.: {tolerance['rule']} ({tolerance['why']})")
    )
    return "\n".join(rows)
