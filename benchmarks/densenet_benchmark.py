"""DenseNet benchmark: measured wall-clock of sequential vs Jacobi vs GS-Jacobi over dense layers.

Two models, each measured in one process on the same weights and inputs (DESIGN.md §7), with
the same code the workflow runs (``ffsolve.experiments.densenet.measure``):

* ``small``: the embedded default's DenseNet-BC (the checkpoint ``densenet_train`` writes) on
  MNIST test images (the prepared embedded split, or the full MNIST test set from a folder);
* ``densenet201``: the DenseNet-201 architecture, SPEED ONLY: random weights (torchvision's
  init, seeded) on random inputs of ``--size``×``--size`` pixels (64 by default, so it fits a CPU;
  the paper used full-resolution ImageNet images on a GPU).

Times: to exactness (tol = 0, stopping inside the solver) and to stable top-5 (the solver stopped
after the iteration from which every image's descending top-5 stays equal to the forward
pass's, found by a separate trace run). Median of ``--repeats`` after ``--warmup``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/densenet_benchmark.py \
        --checkpoint results/densenet/mnist/model.pt --images 100 --size 64

Prints a Markdown table and writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ffsolve.data import load_dataset, load_prepared
from ffsolve.experiments import densenet_inputs as inputs
from ffsolve.experiments.densenet import measure
from ffsolve.experiments.runs import run_names
from ffsolve.jobs import setup_logging
from ffsolve.models.densenet import load_checkpoint
from ffsolve.runtime import device_description, limit_threads, seed_everything, torch_device

log = logging.getLogger("densenet_benchmark")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["small", "densenet201"],
                        default=["small", "densenet201"])
    parser.add_argument("--checkpoint", default="results/densenet/mnist/model.pt",
                        help="the small model (run `snakemake --cores 2 --nolock "
                             "results/densenet/mnist/model.pt` first)")
    parser.add_argument("--mnist", choices=["prepared", "folder"], default="prepared",
                        help="prepared = resources/data/mnist.npz; folder = --folder/MNIST/raw")
    parser.add_argument("--folder", default="../shared/data")
    parser.add_argument("--images", type=int, default=100, help="MNIST images, one batch")
    parser.add_argument("--size", type=int, default=64, help="DenseNet-201 input size (speed only)")
    parser.add_argument("--batch201", type=int, default=1, help="DenseNet-201 inputs per batch")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--block-sizes-201", type=int, nargs="+", default=[8, 48])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default="results/densenet/benchmark.json")
    return parser.parse_args(argv)


def small_problem(args):
    path = Path(args.checkpoint)
    if not path.is_file():
        raise SystemExit(f"no checkpoint at {path}: run `snakemake --cores 2 --nolock {path}` "
                         "first, or pass --checkpoint")
    if args.mnist == "folder":
        data = load_dataset("mnist", "folder", folder=args.folder)
    else:
        data = load_prepared("resources/data/mnist.npz")
    batch = inputs.mnist_tensor(data.test_images[: args.images])
    return load_checkpoint(str(path)), [batch], f"small DenseNet-BC on MNIST ({data.source})"


def densenet201_problem(args):
    model = inputs.random_densenet201(args.seed)
    batch = inputs.random_batch(args.batch201, args.size, args.seed + 1)
    return model, [batch], (f"DenseNet-201 {inputs.SPEED_ONLY_LABEL}, "
                            f"{args.batch201}x3x{args.size}x{args.size}")


def summarise(m, description):
    rows = []
    sequential = float(np.mean([t.median_s for t in m.timings["sequential"]["exact"]]))
    for run in m.runs:
        exact = m.timings[run]["exact"]
        top5 = m.timings[run]["top5"]
        iterations = (m.length if m.outcomes[run][0] is None
                      else max(o.iterations for o in m.outcomes[run]))
        diff = float(np.max(np.abs(m.padded[run][-1] - m.reference)))
        t_exact = float(np.mean([t.median_s for t in exact]))
        t_top5 = None if any(t is None for t in top5) else float(np.mean([t.median_s for t in top5]))
        rows.append({
            "model": description, "run": run, "layers": m.length, "iterations": iterations,
            "stable_top5_iteration": int(m.stable[run][3]),
            "time_exact_s": t_exact, "iqr_exact_s": float(np.mean([t.iqr_s for t in exact])),
            "speedup_exact": sequential / t_exact,
            "time_top5_s": t_top5,
            "speedup_top5": None if t_top5 is None else sequential / t_top5,
            "max_abs_logit_diff": diff,
        })
    return rows


def markdown(rows):
    lines = ["| model | run | iterations (of T) | stable top-5 from | time exact (s) | speedup "
             "| time top-5 (s) | speedup | max abs logit diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        top5 = "n/a" if r["time_top5_s"] is None else f"{r['time_top5_s']:.4g}"
        sp5 = "n/a" if r["speedup_top5"] is None else f"{r['speedup_top5']:.2f}x"
        lines.append(f"| {r['model']} | {r['run']} | {r['iterations']} ({r['layers']}) "
                     f"| {r['stable_top5_iteration']} | {r['time_exact_s']:.4g} "
                     f"(IQR {r['iqr_exact_s']:.2g}) | {r['speedup_exact']:.2f}x | {top5} | {sp5} "
                     f"| {r['max_abs_logit_diff']:.2g} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    limit_threads(args.threads)
    seed_everything(args.seed)
    device = torch_device(args.device)
    timing = {"repeats": args.repeats, "warmup": args.warmup}
    rows = []
    for name in args.models:
        if name == "small":
            model, batches, description = small_problem(args)
            runs = run_names(["sequential", "jacobi", "gs_jacobi"], args.block_sizes)
        else:
            model, batches, description = densenet201_problem(args)
            runs = run_names(["sequential", "jacobi", "gs_jacobi"], args.block_sizes_201)
        log.info("measuring %s: runs %s", description, runs)
        rows += summarise(measure(model, batches, runs, timing, device, name), description)
    text = markdown(rows)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "device": device_description(device), "threads": args.threads, "args": vars(args),
        "rows": rows}, indent=2))
    print(f"\n{device_description(device)}, {args.threads} thread(s); written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
