"""The speculative figure and tables: steps against position for each method and model, the
per-sample bits per position that the distribution check compares, the steps table, and the
published step reductions of SJD and SCD beside ours."""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ffsolve.kit import speedup, time_text  # noqa: E402

TITLES = {"rnn_forward_mnist": "GRU, binarized MNIST (784 positions, 2 values)",
          "pixelcnnpp_mnist": "PixelCNN++, MNIST (784 positions, 256 levels)"}
ORDER = ("sequential", "jacobi", "sjd", "coupled")

# The published step reductions (the authors'
# own claims, on GPUs with large token models).
PUBLISHED = (
    {"method": "sjd", "work": "SJD: Teng et al., ICLR 2025",
     "model": "Lumina-mGPT (7B-parameter token model), text-to-image, GPU",
     "reduction": "2.22x fewer steps (2.05x lower latency)"},
    {"method": "coupled", "work": "SCD (formerly MC-SJD): So et al., ICML 2026",
     "model": "token models for images and video (Cosmos), GPU",
     "reduction": "up to 4.2x (images); 13.3-13.6x (video)"},
)


def by_dataset(runs: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """The runs of each model, methods in the order sequential, jacobi, sjd, coupled."""
    groups = defaultdict(list)
    for run in runs:
        groups[run["dataset"]].append(run)
    rank = {m: i for i, m in enumerate(ORDER)}
    return {d: sorted(rs, key=lambda r: rank.get(r["method"], len(ORDER))) for d, rs in groups.items()}


def steps_figure(runs: Sequence[Mapping]):
    """Per model: the step at which each position was fixed (mean over samples, band min-max),
    against position, per method; and each method's per-sample bits per position."""
    groups = by_dataset(runs)
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.8 * len(groups)), squeeze=False,
                             constrained_layout=True, gridspec_kw={"width_ratios": [2.2, 1]})
    for (dataset, group), (steps_ax, nll_ax) in zip(groups.items(), axes):
        for run in group:
            fixed = np.asarray(run["trace"]["fixed_at"], dtype=np.float64)
            position = np.arange(1, fixed.shape[1] + 1)
            (line,) = steps_ax.plot(position, fixed.mean(0),
                                    label=f"{run['method']} ({run['steps_mean']:.1f} steps/sample)")
            steps_ax.fill_between(position, fixed.min(0), fixed.max(0), color=line.get_color(),
                                  alpha=0.15, linewidth=0)
        steps_ax.set_yscale("log")
        steps_ax.set_xlabel("position (raster order)")
        steps_ax.set_ylabel("step that fixed it (mean, band min-max)")
        steps_ax.set_title(TITLES.get(dataset, dataset), fontsize="medium")
        steps_ax.grid(alpha=0.3)
        steps_ax.legend(fontsize="small")
        values = [np.asarray(run["trace"]["bits_per_dim"]) for run in group]
        nll_ax.boxplot(values, showfliers=True)
        nll_ax.set_xticks(range(1, len(group) + 1), [_check_label(run) for run in group], fontsize="x-small")
        nll_ax.set_ylabel("sample's bits per position under the model")
        nll_ax.grid(alpha=0.3)
    return fig


def _check_label(run: Mapping) -> str:
    check = run.get("distribution_check")
    if not check:
        return run["method"]
    p = check["statistics"]["bits_per_dim"]["p_value"]
    return f"{run['method']}\nKS p={p:.2g}" + ("" if check["passed"] else "\nFAILED")


def _check_text(run: Mapping) -> str:
    check = run.get("distribution_check")
    if not check:
        return ""
    stats = check["statistics"]
    ps = ", ".join(f"{name} p={s['p_value']:.2g}" for name, s in stats.items())
    return f"{'passed' if check['passed'] else 'FAILED'} ({ps})"


def steps_table(runs: Sequence[Mapping]) -> str:
    """One markdown table per model: steps, positions per step, work, time, and the checks."""
    out = []
    for dataset, group in by_dataset(runs).items():
        base = next((r for r in group if r["method"] == "sequential"), None)
        first = group[0]
        out.append(f"**{TITLES.get(dataset, dataset)}**: {first['batch']} samples per method "
                   f"(sequential on {base['rows'] if base else '-'}), window {first.get('window')}, "
                   f"{first['device']}, {first['threads']} thread(s)\n")
        out.append("| method | guarantee | steps per sample: mean ± std [min–max] | × fewer steps "
                   "(positions fixed per step) | steps fixing one position | model calls (batch) "
                   "| time per sampling run (s) | × time | bitwise to sequential "
                   "| distribution check (KS, Bonferroni) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for run in group:
            ratio = speedup(base, run) if base and base["rows"] == run["rows"] else None
            out.append(
                f"| {run['method']} | {run['guarantee']} | {run['steps_mean']:.1f} ± "
                f"{run['steps_std']:.1f} [{run['steps_min']}–{run['steps_max']}] | "
                f"{run['step_reduction']:.1f} | {100 * run['single_position_step_share']:.0f}% | "
                f"{run['model_calls']} ({run['rows']}) | {time_text(run)} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} | "
                f"{'yes' if run['bitwise_equal'] else 'no'} (first {run['compared_rows']} rows) | "
                f"{_check_text(run)} |")
        out.append("")
    return "\n".join(out)


def published_table(runs: Sequence[Mapping]) -> str:
    """Step reductions (T / mean steps per sample) of sjd and coupled here, beside the published
    ones, with what differs."""
    ours = defaultdict(list)
    for dataset, group in by_dataset(runs).items():
        for run in group:
            ours[run["method"]].append(f"{run['step_reduction']:.1f}x ({dataset})")
    lines = ["| method | published | their setting | here (T / mean steps per sample) | what differs |",
             "|---|---|---|---|---|"]
    for row in PUBLISHED:
        lines.append(
            f"| {row['method']} ({row['work']}) | {row['reduction']} | {row['model']} | "
            f"{', '.join(ours.get(row['method'], [])) or 'not run'} | their models are "
            "7B-parameter token models on GPUs, with thousands of tokens per image over a vocabulary "
            "of thousands; here small CPU models of 784 positions over 2 or 256 values. Step "
            "counts do not depend on the hardware; latency does |")
    return "\n".join(lines)
