"""The rnn_forward figures: error against parallel steps and time, the speed/error frontier, and
the table of steps and wall-clock per case (cell, T, H, framework) and method."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ffsolve.kit import LOG_FLOOR, auto_text, plt, speedup, time_text, within_text

METHOD_COLORS = {
    "sequential": "black",
    "sequential_native": "dimgray",
    "jacobi": "tab:red",
    "newton": "tab:blue",
    "quasi_newton": "tab:green",
    "damped_newton": "tab:purple",
}


LOOPS = {"sequential": "sequential loop", "sequential_native": "the framework's own kernel"}
"""The sequential baselines: drawn as a vertical line at their time, not as an iteration."""


def color(method: str) -> str:
    return METHOD_COLORS.get(method, "tab:gray")


def run_label(run: Mapping) -> str:
    """``newton``, ``jacobi (tol 1e-04)``."""
    return run["method"] + (f" (tol {run['tol']:g})" if run.get("tol") else "")


def by_case(runs: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """Runs grouped by case (their ``dataset``), cases in first-seen order."""
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for run in runs:
        groups[run["dataset"]].append(run)
    return dict(groups)


def case_title(runs: Sequence[Mapping]) -> str:
    first = runs[0]
    weights = "trained: MNIST next pixel" if first.get("weights") == "trained" else "random"
    return (f"{first['dataset']}: {first['cell']} ({weights}), T {first['sequence_length']}, "
            f"H {first['hidden_size']}, batch {first['batch']}, {first['framework']}")


def convergence_figure(runs: Sequence[Mapping], title: str = "RNN evaluation by recurrence solvers"):
    """Per case (a row): the largest |s_k - s_loop| over all states against parallel steps (left)
    and against wall-clock time (right), one line per exact (tol 0) run.

    The time axis places step k at k / iterations of the run's measured median time (the total is
    measured; spreading it evenly over the steps is for drawing only). The loop has no iterates
    to draw: it is a vertical line at its time. ``auto`` runs are left out (they repeat the run
    they chose, which is drawn; the table gives the choice).
    """
    cases = by_case(runs)
    fig, axes = plt.subplots(len(cases), 2, figsize=(11, 3.2 * len(cases)), squeeze=False, constrained_layout=True)
    for (case, case_runs), (by_step, by_time) in zip(cases.items(), axes):
        for run in case_runs:
            if run.get("tol"):
                continue
            c = color(run["method"])
            if run["method"] in LOOPS:
                by_time.axvline(run["wall_time_s"], color=c, linestyle=":",
                                label=f"{LOOPS[run['method']]} ({run['iterations']} steps)")
                continue
            if run["method"] == "auto":  # its chosen run is drawn already; the table says which
                continue
            error = np.clip(run["trace"]["error_max"], LOG_FLOOR, None)
            steps = np.arange(len(error))
            per_step = run["wall_time_s"] / max(run["iterations"], 1)
            by_step.plot(steps, error, color=c, marker=".", label=f"{run_label(run)}: {run['iterations']} steps")
            by_time.plot(steps * per_step, error, color=c, marker=".", label=run_label(run))
        by_step.set_title(case_title(case_runs), fontsize="small", loc="left")
        by_step.set_xlabel("parallel steps")
        by_step.set_xscale("symlog", linthresh=10)
        by_time.set_xlabel("wall-clock time (s, median of repeats)")
        by_time.set_xscale("log")
        for ax in (by_step, by_time):
            ax.set_ylabel(f"max |s - s_loop| (0 at {LOG_FLOOR:g})")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    fig.suptitle(title)
    return fig


def frontier_figure(runs: Sequence[Mapping]):
    """Per case: parallel steps and wall-clock time of every run against the largest absolute
    difference of its result from the loop's, one line per method across its tolerances: the
    shared frontier figure (:func:`ffsolve.kit.plots.frontier_figure`) drawn from this experiment's records."""
    from ffsolve.kit import frontier_figure as shared_figure, frontier_panels

    return shared_figure(frontier_panels(runs))


def markdown_table(runs: Sequence[Mapping], training: Mapping | None = None) -> str:
    """Steps and wall-clock per case and run, with the speedups over the library's loop and over
    the framework's own kernel (``sequential_native``) timed in the same process, the largest
    difference from the loop, and its exactness."""
    lines = [
        ("| case | cell | T | H | framework | run | steps | network evals | "
         "time (s, median ± IQR; [min–max] below 5 repeats) | × loop | × own kernel | max abs diff | "
         "bitwise | within tol. |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, case_runs in by_case(runs).items():
        loop = next((r for r in case_runs if r["method"] == "sequential"), None)
        kernel = next((r for r in case_runs if r["method"] == "sequential_native"), None)
        for r in case_runs:
            ratio = speedup(loop, r) if loop else None
            versus_kernel = speedup(kernel, r) if kernel else None
            lines.append(
                f"| {case} | {r['cell']} | {r['sequence_length']} | {r['hidden_size']} | {r['framework']} | "
                f"{r['run']} | {r['iterations']} | {r['network_evaluations']:.4g} | "
                f"{time_text(r)}{auto_text(r)} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} | "
                f"{'' if versus_kernel is None else f'{versus_kernel:.2f}'} | {r['max_abs_diff']:.2g} | "
                f"{'yes' if r['bitwise_equal'] else 'no'} | {within_text(r)} |"
            )
    text = "\n".join(lines) + "\n"
    if training:
        base = training["baseline_bits_per_pixel"]
        text += (f"\nThe mnist GRU (H {training['hidden_size']}) trained {training['steps']} steps "
                 f"({training['curve']['train_time_s']:.1f} s) on next-pixel prediction of binarized MNIST: "
                 f"{training['final_test_bits_per_pixel']:.4f} bits per pixel on {training['test_images']} test "
                 f"images, against {base['pixel_marginal']:.4f} for the per-pixel marginal and "
                 f"{base['constant']:.4f} for the constant predictor.\n")
    for r in runs:
        if r.get("auto"):
            a = r["auto"]
            text += (f"\n{r['dataset']} {r['run']}: chose {a['chosen']} ({a['reason']}); first call "
                     f"{a['first_call_s']:.4g} s with the pilot ({a['decided_by']}), steady state "
                     f"{r['wall_time_s']:.4g} s.\n")
    mnist = [r for r in runs if r.get("bits_per_pixel") is not None]
    if mnist:
        text += ("\n| mnist run | bits per pixel on the batch (from its states) | minus the loop's |\n"
                 "|---|---|---|\n")
        text += "".join(f"| {r['run']} | {r['bits_per_pixel']:.5f} | {r['bits_per_pixel_minus_sequential']:.2g} |\n"
                        for r in mnist)
    return text


def load_training(path: str) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None
