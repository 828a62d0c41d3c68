"""PixelCNN++ figures: the samples every method drew from the same noise, and a table of the runs.

The convergence curves use the shared :func:`ffsolve.kit.plots.convergence_figure`; the table is the
shared :func:`ffsolve.kit.tables.runs_table` (speedups over both sequential baselines, same session).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ffsolve.kit import label  # noqa: E402


def sample_grid(runs: Sequence[dict], title: str, show: int = 8):
    """One row of images per run: the samples each drew from the same noise."""
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
        # A run that did not converge is inexact, whatever its distance.
        exact = "inexact" if not run["converged"] else "bitwise" if run["bitwise_equal"] else (
            "within tol." if run.get("within_tolerance") else "DIFFERS")
        row[0].set_ylabel(f"{label(run)}\n{run['iterations']} it, {run['wall_time_s']:.2f} s\n{exact}",
                          fontsize="x-small")
    fig.suptitle(title)
    return fig
