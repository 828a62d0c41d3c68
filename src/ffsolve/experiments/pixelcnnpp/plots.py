"""PixelCNN++ figures: sample grids per method and the time table against both sequential baselines.

The convergence curves themselves use the shared :func:`ffsolve.plots.convergence_figure`.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BASELINES = ("sequential", "sequential_cache")


def label(run: dict) -> str:
    rows = run.get("block_rows")
    return run["method"] if rows in (None, "") else f"{run['method']} ({rows} row{'s' * (rows > 1)})"


def sample_grid(runs: Sequence[dict], title: str, show: int = 8):
    """One row of images per method: the samples each drew from the same noise."""
    count = min(show, len(runs[0]["trace"]["images"]))
    fig, axes = plt.subplots(len(runs), count, figsize=(1.2 * count + 2.5, 1.3 * len(runs)),
                             squeeze=False, constrained_layout=True)
    for row, run in zip(axes, runs):
        images = (np.asarray(run["trace"]["images"][:count]) + 1.0) / 2.0
        for ax, image in zip(row, images):
            ax.imshow(np.clip(image.squeeze(-1) if image.shape[-1] == 1 else image, 0, 1),
                      cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{label(run)}\n{run['iterations']} it, {run['wall_time_s']:.2f} s",
                          fontsize="x-small")
    fig.suptitle(title)
    return fig


def time_table(runs: Sequence[dict]) -> str:
    """Markdown: iterations, measured median time and speedups against both baselines."""
    base = {r["method"]: r["wall_time_s"] for r in runs if r["method"] in BASELINES}
    head = "| method | iterations | of H·W | time (s, median) | vs sequential | vs sequential_cache | max abs diff | exact match (tol) |"
    rows = [head, "|" + "---|" * 8]
    for run in runs:
        speed = [f"{base[b] / run['wall_time_s']:.2f}×" if b in base else "n/a" for b in BASELINES]
        rows.append(
            f"| {label(run)} | {run['iterations']} | {run['sequence_length']} | "
            f"{run['wall_time_s']:.3f} | {speed[0]} | {speed[1]} | "
            f"{run['max_abs_diff_vs_sequential']:.2g} | {run['exact_match']} "
            f"({run['exact_match_tolerance']:.2g}) |"
        )
    return "\n".join(rows)
