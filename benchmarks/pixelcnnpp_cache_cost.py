"""How much could a per-pixel activation cache (Ramachandran et al. 2017, "Fast generation for
convolutional autoregressive models") save over the row-band cache of ``sequential_cache``?

A row-band step recomputes every layer on a band of rows (the current row and the one above, at
each of the three resolutions) across the whole image width W. A per-pixel step runs the same
layers, in the same order, on one position each (plus writes into its per-layer caches). So a
band step's cost splits into a part that does not shrink with the positions computed (one XLA
op per layer: dispatch, padding, slicing, cache writes) and a part that grows with them. This
script measures the band step of the real model on images of widths W = 4, 8, 16, 28 (the model
is fully convolutional, so one set of weights serves every width), all in one process with the
repeats interleaved across widths, fits t(W) = fixed + per_column · W, and bounds a per-pixel
step from below by ``fixed + per_column / 2`` (one column of one row, where the band computes W
columns of two rows, and no extra cache bookkeeping: an optimistic bound for the per-pixel
cache). The ratio t(28) / bound is the most a per-pixel cache could gain per step here.

    OMP_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false .venv/bin/python \\
        benchmarks/pixelcnnpp_cache_cost.py --nr-resnet 5 --nr-filters 40 --nr-logistic-mix 10 --batch 16

Prints a Markdown table and writes it with the fit as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ffsolve.experiments.pixelcnnpp import mixture
from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP
from ffsolve.experiments.pixelcnnpp.system import Sampler
from ffsolve.kit import jax_key, write_json
from ffsolve.runtime import limit_threads


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nr-resnet", type=int, default=1)
    p.add_argument("--nr-filters", type=int, default=16)
    p.add_argument("--nr-logistic-mix", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--height", type=int, default=28)
    p.add_argument("--widths", type=int, nargs="+", default=[4, 8, 16, 28])
    p.add_argument("--steps", type=int, default=28, help="band steps per timed call")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/tmp/pixelcnnpp_cache_cost.json")
    return p.parse_args(argv)


def band_step_timer(model, params, batch: int, height: int, width: int, steps: int, seed: int):
    """A function timing ``steps`` sequential_cache band steps (one compiled while_loop) on
    ``(batch, height, width, 1)`` images; returns seconds per step."""
    shape = (batch, height, width, 1)
    noise = mixture.draw_noise(jax_key(seed, "pixelcnnpp", "cache_cost", "noise"), shape,
                               model.nr_logistic_mix)
    sampler = Sampler(model, params, noise)
    init, loop, _ = sampler._compiled_loop("sequential_cache", None, 0.0)
    state0 = init()
    jax.block_until_ready(loop(state0, noise, jnp.int32(steps)))  # compile

    def timed() -> float:
        start = time.perf_counter()
        jax.block_until_ready(loop(state0, noise, jnp.int32(steps)))
        return (time.perf_counter() - start) / steps

    return timed


def main(argv=None) -> int:
    args = parse(argv)
    limit_threads(args.threads)
    model = PixelCNNPP(args.nr_resnet, args.nr_filters, args.nr_logistic_mix)
    params = model.init(jax_key(args.seed, "pixelcnnpp", "cache_cost", "init"),
                        jnp.zeros((1, args.height, 28, 1)))["params"]
    timers = {w: band_step_timer(model, params, args.batch, args.height, w, args.steps, args.seed)
              for w in args.widths}
    samples = {w: [] for w in args.widths}
    for _ in range(args.repeats):  # interleaved: machine load hits every width alike
        for w in args.widths:
            samples[w].append(timers[w]())
    med = {w: float(np.median(v)) for w, v in samples.items()}
    widths = np.array(args.widths, float)
    per_column, fixed = np.polyfit(widths, [med[w] for w in args.widths], 1)
    bound = max(fixed, 0.0) + max(per_column, 0.0) / 2
    full = med[max(args.widths)]
    title = (f"PixelCNN++ nr_resnet {args.nr_resnet}, {args.nr_filters} filters, batch {args.batch}, "
             f"height {args.height}; one row-band step (sequential_cache) by image width; "
             f"{args.repeats} interleaved repeats of {args.steps} steps, {args.threads} thread(s)")
    lines = [title, "", "| width | median s/step | min | max |", "|---|---|---|---|"]
    for w in args.widths:
        lines.append(f"| {w} | {med[w]:.5f} | {min(samples[w]):.5f} | {max(samples[w]):.5f} |")
    lines += ["", (f"fit: t(W) = {fixed:.5f} s + {per_column:.6f} s × W; per-pixel step ≥ {bound:.5f} s; "
                   f"most a per-pixel cache could gain per step at width {max(args.widths)}: "
                   f"{full / bound:.2f}×")]
    text = "\n".join(lines)
    print(text)
    write_json(args.out, {"args": vars(args), "samples": {str(k): v for k, v in samples.items()},
                          "median": {str(k): v for k, v in med.items()}, "fixed_s": fixed,
                          "per_column_s": per_column, "per_pixel_bound_s": bound,
                          "max_gain": full / bound, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
