"""PixelCNN++ sampling benchmark: the samplers timed in one process, same weights, same noise.

Each method runs once to check it against the ``sequential`` sample (bit for bit for the methods
that share its compiled map, within half a grey level for the cached ones) and to compile, then
``--repeats`` timed runs, interleaved round-robin across methods so a burst of load from other
processes hits every method alike. Times are medians; every run stops inside its loop.

    # the embedded default's trained model (run the workflow first)
    OMP_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false .venv/bin/python \
        benchmarks/pixelcnnpp_benchmark.py --checkpoint results/pixelcnnpp/mnist/model.msgpack
    # an untrained model at the paper's MNIST size (times per pass are what matter; iteration
    # counts of an untrained model are not those of a trained one)
    ... benchmarks/pixelcnnpp_benchmark.py --random-init --nr-resnet 5 --nr-filters 40 \
        --nr-logistic-mix 10 --batch 16 --gs-rows 15

Prints a Markdown table and writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from ffsolve.experiments.pixelcnnpp import keys
from ffsolve.experiments.pixelcnnpp_samplers import BLOCK_METHODS, METHODS, Sampler, compare
from ffsolve.models import pixelcnnpp_mixture as mixture
from ffsolve.models.pixelcnnpp import PixelCNNPP
from ffsolve.models.pixelcnnpp_checkpoint import load_checkpoint
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
    p.add_argument("--gs-rows", type=int, default=4, help="rows of gs_jacobi(_cache) windows")
    p.add_argument("--jgs-rows", type=int, default=1, help="rows per Jacobi-GS block")
    p.add_argument("--repeats", type=int, default=3)
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
        params = model.init(keys(args.seed)["init"], jnp.zeros((1,) + shape))["params"]
        source = "random init"
    else:
        arch = serialization.msgpack_restore(Path(args.checkpoint).read_bytes())["architecture"]
        model = PixelCNNPP(int(arch["nr_resnet"]), int(arch["nr_filters"]),
                           int(arch["nr_logistic_mix"]))
        shape = (int(arch["height"]), int(arch["width"]), int(arch["channels"]))
        params = load_checkpoint(args.checkpoint, model, shape)
        source = args.checkpoint
    noise = mixture.draw_noise(keys(args.seed)["noise"], (args.batch,) + shape, model.nr_logistic_mix)
    sampler = Sampler(model, params, noise)
    rows = {m: (args.jgs_rows if m == "jacobi_gs" else args.gs_rows) for m in BLOCK_METHODS}
    methods = ["sequential"] + [m for m in args.methods if m != "sequential"]
    results, times = {}, {m: [] for m in methods}
    reference = None
    for m in methods:  # check + compile (the timed loops of the cached methods compile here)
        t0 = time.perf_counter()
        out = sampler.run(m, rows.get(m))
        compile_s = time.perf_counter() - t0
        reference = out.images if reference is None else reference
        results[m] = {"iterations": out.iterations, "first_call_s": compile_s,
                      **compare(out.images, reference, m), "block_rows": rows.get(m)}
        print(f"{m}: {out.iterations} iterations, first call {compile_s:.2f} s", file=sys.stderr)
    for _ in range(args.repeats):
        for m in methods:
            t0 = time.perf_counter()
            jax.block_until_ready(sampler.run(m, rows.get(m)).images)
            times[m].append(time.perf_counter() - t0)
    base = {b: statistics.median(times[b]) for b in ("sequential", "sequential_cache") if b in times}
    lines = ["| method | iterations | of H·W | median s | min s | vs sequential | vs sequential_cache | exact |",
             "|" + "---|" * 8]
    for m in methods:
        med = statistics.median(times[m])
        results[m].update(median_s=med, times_s=times[m])
        vs = [f"{base[b] / med:.2f}×" if b in base else "n/a" for b in ("sequential", "sequential_cache")]
        lines.append(f"| {m}{'' if rows.get(m) is None else f' ({rows[m]} rows)'} | "
                     f"{results[m]['iterations']} | {sampler.length} | {med:.3f} | {min(times[m]):.3f} | "
                     f"{vs[0]} | {vs[1]} | {results[m]['exact_match']} |")
    table = "\n".join(lines)
    print(table)
    record = {"model": {"nr_resnet": model.nr_resnet, "nr_filters": model.nr_filters,
                        "nr_logistic_mix": model.nr_logistic_mix}, "weights": source,
              "shape": shape, "batch": args.batch, "repeats": args.repeats, "seed": args.seed,
              "threads": args.threads, "device": device_description(device), "results": results,
              "table": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=float))
    return 0 if all(r["exact_match"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
