"""DenseNet benchmark: measured wall-clock of the forward pass vs Jacobi vs GS-Jacobi over dense layers.

Two models, each measured in one process through the workflow's own harness job code
(``ffsolve.experiments.densenet.experiment.measure``): same weights and inputs, timed repeats
interleaved, logits checked against the forward pass's.

* ``small``: the embedded default's DenseNet-BC (the checkpoint ``densenet_train`` writes) on
  MNIST test images (the prepared embedded split, or the full MNIST test set from a folder);
* ``densenet201``: the DenseNet-201 architecture, SPEED ONLY: random weights (torchvision's
  init, seeded) on random inputs of ``--size``×``--size`` pixels (64 by default, so it fits a CPU;
  the paper used full-resolution ImageNet images on a GPU).

Runs: ``sequential`` (the model's own forward pass, the reference), ``jacobi`` and ``gs_jacobi``
timed to exactness (tol = 0, stopping inside the solver), and ``jacobi_top5`` timed to a stable
top-5: Jacobi stopped inside its loop once every image's top-5 list has been unchanged for
``--patience`` steps (a rule that never sees the forward pass; its record gives the stop step and
the fraction of images whose top-5 / top-1 then equal the forward pass's). Median of
``--repeats`` after ``--warmup``, every run of a model in one process, repeats interleaved.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/densenet_benchmark.py \
        --checkpoint results/densenet/mnist/model.pt --images 100 --size 64

Prints a Markdown table per model and writes the records under ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ffsolve.data import load_dataset, load_prepared
from ffsolve.experiments.densenet import data as inputs
from ffsolve.experiments.densenet import plots
from ffsolve.experiments.densenet.experiment import (
    ModelSettings,
    Problem,
    MeasureSettings,
    Training,
    measure,
    run_specs,
)
from ffsolve.experiments.densenet.model import load_checkpoint, random_densenet201
from ffsolve.workflow.jobs import setup_logging
from ffsolve.kit.harness import TimingSettings
from ffsolve.runtime import limit_threads, torch_device

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
    parser.add_argument("--patience", type=int, default=3,
                        help="jacobi_top5: steps every image's top-5 must stay unchanged")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", default="results/densenet/benchmark")
    return parser.parse_args(argv)


def small_problem(args) -> Problem:
    path = Path(args.checkpoint)
    if not path.is_file():
        raise SystemExit(f"no checkpoint at {path}: run `snakemake --cores 2 --nolock {path}` "
                         "first, or pass --checkpoint")
    if args.mnist == "folder":
        data = load_dataset("mnist", "folder", folder=args.folder)
    else:
        data = load_prepared("resources/data/mnist.npz")
    batch = inputs.mnist_tensor(data.test_images[: args.images])
    return Problem(load_checkpoint(str(path)), [batch], data.test_labels[: args.images],
                   f"small DenseNet-BC on MNIST ({data.source})")


def densenet201_problem(args) -> Problem:
    batch = inputs.random_batch(args.batch201, args.size, args.seed + 1)
    return Problem(random_densenet201(args.seed), [batch], None,
                   f"DenseNet-201 {inputs.SPEED_ONLY_LABEL}, {args.batch201}x3x{args.size}x{args.size}",
                   speed_only=True)


def settings(args, block_sizes) -> MeasureSettings:
    unused_model = ModelSettings(1, (1,), 1, 1, 0.5, 1)  # the problems bring their own models
    return MeasureSettings(methods=("sequential", "jacobi", "jacobi_top5", "gs_jacobi"),
                    block_sizes=tuple(block_sizes), images=1, image_size=None, weights_file=None,
                    download=False, top5_patience=args.patience, model=unused_model,
                    train=Training(1, 1, 1.0))


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    limit_threads(args.threads)
    device = torch_device(args.device)
    timing = TimingSettings(repeats=args.repeats, warmup=args.warmup)
    for name in args.models:
        if name == "small":
            problem, config = small_problem(args), settings(args, args.block_sizes)
        else:
            problem, config = densenet201_problem(args), settings(args, args.block_sizes_201)
        runs = [spec.name for spec in run_specs(config)]
        out = Path(args.out) / name
        records = measure(
            config, problem=problem, dataset=name, seed=args.seed, timing=timing, device=device,
            metrics={run: str(out / run / "metrics.json") for run in runs},
            traces={run: str(out / run / "trace.npz") for run in runs}, threads=args.threads,
        )
        print(plots.table([records[run] for run in runs]))
        print(f"\nrecords written under {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
