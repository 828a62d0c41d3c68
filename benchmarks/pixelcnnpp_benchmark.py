"""PixelCNN++ sampling benchmark: every sampler through the shared harness in one process, on the
same weights and noise (what the ``pixelcnnpp_measure`` rule does, outside the workflow).

Timed repeats are interleaved round-robin across methods after ``--warmup`` untimed rounds
(compilation); the timed outputs are checked against ``sequential`` (bit for bit for the methods
that share its compiled map, within the derived float32 tolerance for the cached ones). Times are
medians; every run stops inside its loop.

    # the embedded default's trained model (run the workflow first)
    OMP_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false .venv/bin/python \\
        benchmarks/pixelcnnpp_benchmark.py --checkpoint results/pixelcnnpp/mnist/model.msgpack
    # an untrained model at the paper's MNIST size (times per pass are what matter; iteration
    # counts of an untrained model are not those of a trained one)
    ... benchmarks/pixelcnnpp_benchmark.py --random-init --nr-resnet 5 --nr-filters 40 \\
        --nr-logistic-mix 10 --batch 16 --block-sizes 28 420

Prints a Markdown table and writes the records as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from ffsolve.experiments.pixelcnnpp import mixture
from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP, load_checkpoint
from ffsolve.experiments.pixelcnnpp.system import BLOCKED, METHODS, Sampler, candidates
from ffsolve.kit import RunContext, expand_runs, jax_key, measure, record, write_json
from ffsolve.kit.tables import runs_table
from ffsolve.runtime import device_description, jax_device, limit_threads


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="results/pixelcnnpp/mnist/model.msgpack")
    p.add_argument("--random-init", action="store_true", help="untrained weights (no checkpoint)")
    p.add_argument("--nr-resnet", type=int, default=1)
    p.add_argument("--nr-filters", type=int, default=16)
    p.add_argument("--nr-logistic-mix", type=int, default=5)
    p.add_argument("--shape", type=int, nargs=3, default=(28, 28, 1), metavar=("H", "W", "C"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--block-sizes", type=int, nargs="+", default=[28, 112],
                   help="positions per block of the block methods")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default="benchmarks/pixelcnnpp_benchmark.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    limit_threads(args.threads)
    device = jax_device(args.device)
    shape = tuple(args.shape)
    if args.random_init:
        model = PixelCNNPP(args.nr_resnet, args.nr_filters, args.nr_logistic_mix)
        params = model.init(jax_key(args.seed, "pixelcnnpp", "benchmark", "init"),
                            jnp.zeros((1,) + shape))["params"]
        source = "random init"
    else:
        arch = serialization.msgpack_restore(Path(args.checkpoint).read_bytes())["architecture"]
        model = PixelCNNPP(int(arch["nr_resnet"]), int(arch["nr_filters"]), int(arch["nr_logistic_mix"]))
        shape = (int(arch["height"]), int(arch["width"]), int(arch["channels"]))
        params = load_checkpoint(args.checkpoint, model, shape)
        source = args.checkpoint
    methods = ["sequential"] + [m for m in args.methods if m != "sequential"]
    with jax.default_device(device):
        noise = mixture.draw_noise(jax_key(args.seed, "pixelcnnpp", "benchmark", "noise"),
                                   (args.batch,) + shape, model.nr_logistic_mix)
        sampler = Sampler(model, params, noise)
        specs = expand_runs(methods, args.block_sizes, blocked=BLOCKED)
        extra = {"weights": source, "image_shape": list(shape),
                 "model": {"nr_resnet": model.nr_resnet, "nr_filters": model.nr_filters,
                           "nr_logistic_mix": model.nr_logistic_mix}}
        measured = measure(candidates(sampler, specs, 0.0, extra), repeats=args.repeats,
                           warmup=args.warmup)
    context = RunContext("pixelcnnpp", "benchmark", args.seed, device_description(device), args.batch,
                         args.threads)
    records = [record(m, context) for m in measured.values()]
    print(runs_table(records))
    write_json(args.out, {"threads": args.threads, "records": records})
    ok = all(m.bitwise_equal or m.within_tolerance for m in measured.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
