"""The compiled JAX driver of ``ffsolve.solve`` against a hand-written jitted Jacobi loop.

Samples from a Flax MADE-like masked MLP (Gaussian outputs, noise drawn up front: a triangular
map along the 64 dimensions, batch 16, two hidden layers of 512) by Jacobi iteration three ways,
on the same map, weights and noise, in one process, repeats interleaved round-robin (each round
starting with the next program):

(a) ``jax.jit`` of ``ffsolve.solve(f, x0, method="jacobi")``: the compiled driver (one
    ``lax.while_loop`` with ffsolve's stopping rules and triangular check);
(b) a hand-written jitted ``lax.while_loop`` Jacobi: ``x ← f(x)`` until a step changes nothing
    or T steps;
(c) the Python driver, un-jitted ``ffsolve.solve`` with a jitted ``f`` (one dispatch per step).

Each program is timed in groups of calls of at least 10 ms (calls per group calibrated on an
untimed call after warm-up), after ``block_until_ready``. Reports each program's median time per
solve and per step (solve time / its steps) with min and max over the repeats, and (a)/(b) per
step (the target: <= 1.1), and checks that all three return the same x, bit for bit, and the
same number of steps. Run it on a quiet machine:

    ../shared/tools/quiet-run -- .venv/bin/python benchmarks/jax_driver.py
    .venv/bin/python benchmarks/jax_driver.py --quick      # a small size, for the test suite

``--json PATH`` also writes the numbers. Exit status 1 if the three disagree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import ffsolve

FULL = dict(dims=64, batch=16, hidden=512, repeats=31)
QUICK = dict(dims=12, batch=4, hidden=32, repeats=3)
GROUP_S = 0.01  # the shortest timed group of calls


class MaskedDense(nn.Module):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask (MADE's connectivity)."""

    mask: np.ndarray  # (inputs, features)

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), self.mask.shape)
        bias = self.param("bias", nn.initializers.normal(0.1), (self.mask.shape[1],))
        return x @ (kernel * jnp.asarray(self.mask, kernel.dtype)) + bias


class Made(nn.Module):
    """MADE (Germain et al. 2015) with Gaussian outputs: mean and log-scale of each dimension
    from the dimensions before it, two masked hidden layers."""

    dims: int
    hidden: int

    def setup(self):
        rng = np.random.default_rng(0)
        degrees_in = np.arange(self.dims)
        degrees_1 = rng.integers(0, self.dims - 1, self.hidden)
        degrees_2 = rng.integers(0, self.dims - 1, self.hidden)
        m1 = (degrees_1[None, :] >= degrees_in[:, None]).astype(np.float32)
        m2 = (degrees_2[None, :] >= degrees_1[:, None]).astype(np.float32)
        out = (degrees_in[None, :] > degrees_2[:, None]).astype(np.float32)
        self.layers = (MaskedDense(m1), MaskedDense(m2), MaskedDense(np.concatenate([out, out], 1)))

    def __call__(self, x):
        h = nn.relu(self.layers[0](x))
        h = nn.relu(self.layers[1](h))
        out = self.layers[2](h)
        return out[..., :self.dims], jnp.tanh(out[..., self.dims:])


def problem(dims: int, batch: int, hidden: int):
    """The sampling map f (batch, dims) -> (batch, dims), triangular along axis 1, and x0."""
    model = Made(dims, hidden)
    x0 = jnp.zeros((batch, dims), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x0)
    noise = jax.random.normal(jax.random.PRNGKey(1), (batch, dims), jnp.float32)

    def f(x):
        mean, log_scale = model.apply(params, x)
        return mean + jnp.exp(log_scale) * noise

    return f, x0


def programs(f, x0):
    """name -> a function of x0 returning (x, steps), each the same Jacobi on f."""
    length = x0.shape[1]

    @jax.jit
    def compiled_driver(x0):
        res = ffsolve.solve(f, x0, method="jacobi", axis=1)
        return res.x, res.iterations

    @jax.jit
    def hand_written(x0):
        def step(carry):
            k, x, _ = carry
            y = f(x)
            return k + 1, y, jnp.all(y == x)

        def going(carry):
            k, _, done = carry
            return (k < length) & ~done

        k, x, _ = jax.lax.while_loop(going, step, (0, x0, False))
        return x, k

    f_jit = jax.jit(f)

    def python_driver(x0):
        res = ffsolve.solve(f_jit, x0, method="jacobi", axis=1)
        return res.x, res.iterations

    return {"(a) jit(ffsolve.solve) compiled driver": compiled_driver,
            "(b) hand-written jitted while_loop": hand_written,
            "(c) Python driver, jitted f": python_driver}


def calls_per_group(program, x0) -> int:
    start = time.perf_counter()
    jax.block_until_ready(program(x0))
    once = time.perf_counter() - start
    return max(1, int(np.ceil(GROUP_S / max(once, 1e-7))))


def run(dims: int, batch: int, hidden: int, repeats: int) -> dict:
    f, x0 = problem(dims, batch, hidden)
    progs = programs(f, x0)
    outputs = {}
    for name, program in progs.items():  # warm-up: compiles, then the output to check
        jax.block_until_ready(program(x0))
        x, steps = program(x0)
        outputs[name] = (np.asarray(x), int(steps))
    groups = {name: calls_per_group(program, x0) for name, program in progs.items()}
    samples = {name: [] for name in progs}
    names = list(progs)
    for r in range(repeats):
        # round-robin, each round starting one program later: no program always follows (c)
        for name in names[r % len(names):] + names[:r % len(names)]:
            program, n = progs[name], groups[name]
            start = time.perf_counter()
            for _ in range(n):
                out = program(x0)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / n)
    (x_ref, steps_ref), *rest = outputs.values()
    identical = all(np.array_equal(x, x_ref) for x, _ in rest)
    same_steps = all(s == steps_ref for _, s in rest)
    report = {"dims": dims, "batch": batch, "hidden": hidden, "repeats": repeats,
              "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "identical_x": identical, "same_steps": same_steps,
              "steps": {name: s for name, (_, s) in outputs.items()},
              "calls_per_group": groups, "programs": {}}
    for name, times in samples.items():
        steps = outputs[name][1]
        report["programs"][name] = {
            "solve_ms_median": 1e3 * statistics.median(times),
            "step_us_median": 1e6 * statistics.median(times) / steps,
            "step_us_min": 1e6 * min(times) / steps,
            "step_us_max": 1e6 * max(times) / steps,
        }
    a, b, c = (samples[name] for name in progs)
    sa, sb, sc = (outputs[name][1] for name in progs)
    ratios = [(ta / sa) / (tb / sb) for ta, tb in zip(a, b)]  # same round, per step
    report["ratio_a_over_b"] = {"median_of_medians": statistics.median(a) / sa
                                / (statistics.median(b) / sb),
                                "per_round_median": statistics.median(ratios),
                                "per_round_min": min(ratios), "per_round_max": max(ratios)}
    report["ratio_c_over_b"] = statistics.median(c) / sc / (statistics.median(b) / sb)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small size, few repeats")
    parser.add_argument("--repeats", type=int, help="rounds of interleaved timing")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    if args.repeats:
        size["repeats"] = args.repeats
    report = run(**size)
    print(f"MADE-like masked MLP: {report['dims']} dims, batch {report['batch']}, hidden "
          f"{report['hidden']}; {report['repeats']} interleaved rounds on {report['device']} "
          f"(jax {report['jax']})")
    for name, r in report["programs"].items():
        print(f"  {name:40s} {report['steps'][name]:3d} steps  {r['solve_ms_median']:8.3f} ms/solve  "
              f"{r['step_us_median']:8.1f} us/step  (min {r['step_us_min']:.1f}, max "
              f"{r['step_us_max']:.1f})")
    ratio = report["ratio_a_over_b"]
    print(f"  (a)/(b) per step: {ratio['median_of_medians']:.3f} (per-round ratios: median "
          f"{ratio['per_round_median']:.3f}, min {ratio['per_round_min']:.3f}, max "
          f"{ratio['per_round_max']:.3f}; target <= 1.1)")
    print(f"  (c)/(b) per step: {report['ratio_c_over_b']:.2f}")
    print(f"  identical x: {report['identical_x']}, same steps: {report['same_steps']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["identical_x"] and report["same_steps"] else 1


if __name__ == "__main__":
    sys.exit(main())
