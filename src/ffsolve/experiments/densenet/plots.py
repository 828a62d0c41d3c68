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


def figure(runs: Sequence[dict]):
    """Logit error and top-5 disagreement against parallel iterations and measured time."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for run in runs:
        trace = run["trace"]
        last = int(run["iterations"]) + 1  # iterates 0..iterations (the rest is padding)
        steps = np.arange(last)
        seconds = trace["time_s"][:last]
        error = trace["logit_error"][:last]
        disagree = trace["top5_mismatch"][:last].mean(axis=1)
        for column, x in enumerate((steps, seconds)):
            # The time panel is on a log axis (the methods' times differ by an order of magnitude
            # on a CPU), so it starts at the first call, not at t = 0.
            keep = slice(None) if column == 0 else slice(1, None)
            line = _median_band(axes[0, column], x[keep], error[keep], label=label(run))
            axes[1, column].plot(x[keep], disagree[keep], color=line.get_color(), label=label(run))
            stable = run.get("stable_top5_iteration")
            if stable is not None and (column == 0 or stable > 0):
                axes[1, column].axvline(x[stable], color=line.get_color(), linestyle=":", alpha=0.7)
    for column, xlabel in enumerate(("parallel iterations (layer-map calls)",
                                     "measured wall-clock time (s, log scale)")):
        axes[0, column].set_yscale("log")
        axes[0, column].set_ylabel("L2 error of logits vs forward pass\n(median, 10-90% of images)")
        axes[1, column].set_ylabel("fraction of images whose top-5 differs")
        axes[1, column].set_xlabel(xlabel)
        for row in range(2):
            axes[row, column].grid(alpha=0.3)
    for row in range(2):
        axes[row, 1].set_xscale("log")
    axes[1, 0].legend(fontsize="small", title="dotted: top-5 stays equal from here")
    fig.suptitle(_title(runs), fontsize="medium")
    return fig


def table(runs: Sequence[dict]) -> str:
    """Iterations, measured times and speedups against the ordinary forward pass."""
    rows = [
        "| run | iterations (of T) | stable top-1 from | stable top-5 from | time to exact (s) "
        "| speedup | time to stable top-5 (s) | speedup | max abs logit diff | exact match |",
        "|---|---|---|---|---|---|---|---|---|---|",
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
            f"| {run.get('stable_top1_iteration')} | {run.get('stable_top5_iteration')} "
            f"| {run['wall_time_s']:.4g} | {speed('wall_time_s')} "
            f"| {'n/a' if top5 is None else f'{top5:.4g}'} | {speed('wall_time_top5_s')} "
            f"| {run['max_abs_diff_vs_sequential']:.2g} | {run['exact_match']} |"
        )
    first = runs[0]
    rows.append("")
    rows.append(
        f"{_title(runs)}. Times: mean over input batches of the median of "
        f"{first['timing']['repeats']} timed repeats after {first['timing']['warmup']} warm-up; "
        "sequential = the ordinary forward pass (it cannot stop early, so both of its times are "
        "the same run). exact match: max abs logit diff <= "
        f"{first['exact_match_tolerance']['allowed_abs_diff']:.2g}."
    )
    return "\n".join(rows)
