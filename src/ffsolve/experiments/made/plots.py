"""The MADE figures (paper's made.ipynb): convergence curves, the sample grid, the runs table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ffsolve.kit import LOG_FLOOR, label, plot_band, plt, runs_table

COLORS = {"sequential": "black", "sequential_cache": "tab:gray", "jacobi": "tab:red"}


def _color(run: dict, index: int) -> str:
    others = ("tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")
    return COLORS.get(run["run"], others[index % len(others)])


def convergence_figure(runs: Sequence[dict], title: str):
    """L2 error to the final sample (solid, mean ± std over the batch) and L2 change between
    iterates (dashed, batch mean), against parallel iterations (left) and wall-clock time (right).

    Each call of f is one MADE forward pass of the same cost whatever the method, so iteration k
    sits at k / iterations of the run's measured median time on the right (measured total, spread
    evenly for drawing). ``sequential_cache``'s steps cost unequal shares of a pass (later
    dimensions read more hidden units), and so do ``suffix_jacobi``'s and ``sliding_jacobi``'s
    (each computes a window); their traces give the work done before each step, and iteration k
    sits at that share of the median time.
    """
    fig, (by_iter, by_time) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for i, run in enumerate(runs):
        trace, color = run["trace"], _color(run, i)
        steps = np.arange(len(trace["error_mean"]), dtype=np.float64)
        work = np.asarray(trace.get("cumulative_network_evaluations", steps), dtype=np.float64)
        at_time = work / max(work[-1], 1e-300) * run["wall_time_s"]
        for ax, x in ((by_iter, steps), (by_time, at_time)):
            plot_band(ax, x, trace["error_mean"], trace["error_std"],
                            color=color, label=f"{label(run)}: error")
            # No band on the change: block methods make it jump at every block and the bands
            # would hide the error curves.
            ax.plot(x[1:], np.clip(trace["change_mean"], LOG_FLOOR, None),
                    color=color, linestyle="--", linewidth=0.8, label=f"{label(run)}: change")
    by_iter.set_xlabel("parallel iterations (MADE forward passes; part of one for the cached and windowed runs)")
    by_time.set_xlabel("wall-clock time (s, median of repeats)")
    for ax in (by_iter, by_time):
        ax.set_ylabel(f"L2 distance (0 drawn at {LOG_FLOOR:g})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    by_time.set_xscale("log")
    by_iter.legend(fontsize="x-small", ncol=2, loc="lower right")
    fig.suptitle(title)
    return fig


def to_images(logits: np.ndarray, image_shape: Sequence[int], lam: float) -> np.ndarray:
    """``(..., D)`` logit-space samples -> ``(..., H, W)`` or ``(..., H, W, 3)`` in [0, 1]."""
    unit = np.clip((1.0 / (1.0 + np.exp(-logits.astype(np.float64))) - lam) / (1 - 2 * lam), 0, 1)
    channels, height, width = image_shape
    images = unit.reshape(unit.shape[:-1] + (channels, height, width))
    images = np.moveaxis(images, -3, -1)
    return images[..., 0] if channels == 1 else images


def snapshot_mosaic(run: dict, columns: Sequence[int]) -> np.ndarray:
    """Samples (rows) at the iterations ``columns`` (then the final one), tiled with a 1-px gap.

    A run that converged before iteration k shows its final sample there: it is its iterate k.
    """
    trace = run["trace"]
    kept = dict(zip(trace["snapshot_iterations"].tolist(), trace["snapshots"]))
    final = kept[max(kept)]
    frames = [kept.get(k, final) if k <= max(kept) else final for k in columns] + [final]
    images = to_images(np.stack(frames), trace["image_shape"], float(trace["logit_lambda"]))
    cols, rows = images.shape[:2]
    height, width = images.shape[2:4]
    tail = images.shape[4:]
    mosaic = np.ones((rows * (height + 1) - 1, cols * (width + 1) - 1) + tail)
    for c in range(cols):
        for r in range(rows):
            mosaic[r * (height + 1): r * (height + 1) + height,
                   c * (width + 1): c * (width + 1) + width] = images[c, r]
    return mosaic


def sample_grid_figure(runs: Sequence[dict], title: str, compare: str = "jacobi"):
    """Sequential beside ``compare`` (default Jacobi): samples at iterations 0, 5, ... and final."""
    by_name = {run["run"]: run for run in runs}
    shown = [by_name[name] for name in ("sequential", compare) if name in by_name]
    if not shown:
        raise ValueError(f"no sequential or {compare} run among {sorted(by_name)}")
    columns = [int(k) for k in shown[0]["trace"]["snapshot_iterations"][:-1]]
    columns = sorted(set(columns) | set(int(k) for r in shown for k in r["trace"]["snapshot_iterations"][:-1]))
    columns = [k for k in columns if k <= max(int(r["trace"]["snapshot_iterations"][-1]) for r in shown)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), constrained_layout=True,
                             squeeze=False)
    for ax, run in zip(axes[0], shown):
        mosaic = snapshot_mosaic(run, columns)
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        width = mosaic.shape[1] / (len(columns) + 1)
        ax.set_xticks([width * (i + 0.5) for i in range(len(columns) + 1)])
        ax.set_xticklabels([str(k) for k in columns] + [f"final\n({run['iterations']})"], fontsize=7)
        ax.set_yticks([])
        ax.set_xlabel("iteration")
        ax.set_title(f"{label(run)} (the reference)" if run["method"] == "sequential" else
                     f"{label(run)}, bitwise equal to sequential: {run['bitwise_equal']}")
    fig.suptitle(title)
    return fig


def load_training(path: Optional[str]) -> Optional[dict]:
    return json.loads(Path(path).read_text()) if path else None


def markdown_table(runs: Sequence[dict], training: Optional[dict] = None) -> str:
    """The shared runs table (iterations, network evaluations, median time, speedup over the
    sequential run of the same session, bitwise equality), then a line on the model."""
    lines = [runs_table(runs).rstrip("\n")]
    if training:
        lines.append("")
        lines.append(
            f"Model: MADE {training['hidden_sizes']} trained {training['steps']} steps on "
            f"{training['dataset']} ({training['data_source']}): train {training['final_train_bpd']:.3f}, "
            f"test {training['final_test_bpd']:.3f} bits/dim."
        )
    return "\n".join(lines)
