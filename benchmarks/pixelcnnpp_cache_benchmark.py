"""The per-pixel cached PixelCNN++ loop (``sequential_cache``) against one full forward pass, at the
paper's MNIST size (nr_resnet 5, 40 filters, 10 mixtures, batch 16) and at the embedded default's
small model (config/config.yaml's ``pixelcnnpp`` section), in one process (issue 20, item 3).

Per size it times, on one set of untrained weights and one noise (times do not depend on what the
weights learned), repeats interleaved round-robin across every program of both sizes:

- ``full_pass``: the sampling map ``f`` (one forward pass and the mixture sampling: the unit of
  ``network_evaluations``), compiled once;
- ``sequential_cache``: ``Sampler.run("sequential_cache")``, the whole sample (T = 784 positions)
  as one compiled ``lax.while_loop`` through :class:`pixel_cache.RasterCache` (two rows per
  layer);
- ``per_position_cache`` (``--before``, on by default): the loop ``sequential_cache`` ran before,
  kept here to measure against: the same while loop stepping :func:`pixel_cache.positions_step`
  one position at a time through full-size padded maps (what the cached Jacobi-GS still uses),
  in the first ``--before-repeats`` rounds only.

Each program is called once to compile and once more, untimed, to calibrate: a timed sample is one
call, or a group of calls lasting at least 10 ms, timed as a whole (DESIGN.md §7); the table gives
medians, with the IQR from five repeats on (below that min and max), and each loop's median over
the full pass's. Checks, on the timed outputs: the cached sample is a fixed point of ``f`` up to
rounding (``max |f(x) − x|``, one pass: each pixel against the full pass given the pixels before
it); with ``--reference`` (default: the small model only; the paper size's ``sequential`` is 784
full passes) also ``sequential``'s sample and the declared tolerance (``system.cached_tolerance``).

    # what was run (2-core shared CPU machine, one thread, as the paper benchmark)
    /work/shared/tools/quiet-run -- .venv/bin/python benchmarks/pixelcnnpp_cache_benchmark.py \\
        --out /tmp/pixelcnnpp_cache_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

from ffsolve.runtime import limit_threads

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"nr_resnet": 5, "nr_filters": 40, "nr_logistic_mix": 10, "batch": 16}
GROUP_S = 0.010  # a timed sample lasts at least this long


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["paper", "small"], choices=("paper", "small"))
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"),
                   help="the small model's settings: its pixelcnnpp section")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--before", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the per-position loop sequential_cache ran before")
    p.add_argument("--before-repeats", type=int, default=3,
                   help="rounds the per-position loop takes part in (the first ones; it is slow)")
    p.add_argument("--reference", nargs="*", default=["small"], choices=("paper", "small"),
                   help="sizes whose samples are checked against sequential within the tolerance")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def small_settings(path: str) -> dict:
    section = yaml.safe_load(Path(path).read_text())["pixelcnnpp"]
    return {k: int(section[k]) for k in ("nr_resnet", "nr_filters", "nr_logistic_mix", "batch")}


def per_position_loop(sampler):
    """The loop ``sequential_cache`` ran before: one position a step through
    :func:`pixel_cache.positions_step` and full-size padded maps, one compiled while loop."""
    import jax
    import jax.numpy as jnp

    from ffsolve.experiments.pixelcnnpp import mixture, pixel_cache

    def init():
        return (jnp.zeros(sampler.shape, jnp.float32), sampler._empty_pixel_cache(),
                jnp.int32(0), jnp.int32(0))

    def step(state, noise):
        images, cache, t, work = state
        row, col = t // sampler.width, t % sampler.width
        cache, params, done = pixel_cache.positions_step(sampler.layers, cache, images, t[None])
        value = mixture.sample(params[0], mixture.Noise(*(a[:, row, col] for a in noise)))
        images = jax.lax.dynamic_update_slice(images, value[:, None, None, :], (0, row, col, 0))
        return images, cache, t + 1, work + done

    @jax.jit
    def loop(state, noise):
        return jax.lax.while_loop(lambda s: s[2] < sampler.length, lambda s: step(s, noise), state)

    init = jax.jit(init)

    def run():
        images, _, _, work = loop(init(), sampler.noise)
        return images.reshape(sampler.shape[0], sampler.length, -1), work
    return run


def build(size: str, settings: dict, args) -> dict:
    """The sampler of one size and its timed programs (each returns what it computed)."""
    import jax.numpy as jnp

    from ffsolve.experiments.pixelcnnpp import mixture
    from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP
    from ffsolve.experiments.pixelcnnpp.system import Sampler
    from ffsolve.kit import jax_key

    model = PixelCNNPP(settings["nr_resnet"], settings["nr_filters"], settings["nr_logistic_mix"])
    shape = (settings["batch"], 28, 28, 1)
    params = model.init(jax_key(args.seed, "pixelcnnpp", "cache_benchmark", size, "init"),
                        jnp.zeros(shape))["params"]
    noise = mixture.draw_noise(jax_key(args.seed, "pixelcnnpp", "cache_benchmark", size, "noise"),
                               shape, model.nr_logistic_mix)
    sampler = Sampler(model, params, noise)
    x0 = sampler.initial()

    def cached():
        result = sampler.run("sequential_cache")
        return result.x, result.network_evaluations

    programs = {"full_pass": lambda: sampler.f(x0), "sequential_cache": cached}
    if args.before:
        programs["per_position_cache"] = per_position_loop(sampler)
    return {"sampler": sampler, "programs": programs, "settings": settings}


def call(program):
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(program())
    return time.perf_counter() - start, out


def summary(times: list[float]) -> dict:
    times = sorted(times)
    out = {"median_s": statistics.median(times), "repeats": len(times), "min_s": times[0],
           "max_s": times[-1]}
    if len(times) >= 5:
        q = statistics.quantiles(times, n=4, method="inclusive")
        out["iqr_s"] = [q[0], q[2]]
    return out


def spread(s: dict) -> str:
    lo, hi = s.get("iqr_s", [s["min_s"], s["max_s"]])
    return f"{lo:.4g}–{hi:.4g} ({'IQR' if 'iqr_s' in s else 'min–max'})"


def main(argv=None) -> int:
    args = parse(argv)
    limit_threads(args.threads)
    import jax
    import numpy as np

    from ffsolve.experiments.pixelcnnpp.system import cached_tolerance
    from ffsolve.runtime import device_description, jax_device

    sizes = {"paper": PAPER, "small": small_settings(args.config)}
    device = jax_device("cpu")
    with jax.default_device(device):
        built = {size: build(size, sizes[size], args) for size in args.sizes}
        jobs = [(size, name, prog) for size in args.sizes
                for name, prog in built[size]["programs"].items()]
        calls, outputs = {}, {}
        for size, name, prog in jobs:  # compile, then calibrate on an untimed call
            start = time.perf_counter()
            call(prog)
            compile_s = time.perf_counter() - start
            seconds, outputs[size, name] = call(prog)
            calls[size, name] = max(1, int(np.ceil(GROUP_S / max(seconds, 1e-9))))
            print(f"{size} {name}: compiled and ran in {compile_s:.1f} s; a call {seconds:.4g} s, "
                  f"{calls[size, name]} call(s) a sample", flush=True)
        times = {(size, name): [] for size, name, _ in jobs}
        for round_ in range(args.repeats):  # round-robin: drift hits every program alike
            for size, name, prog in jobs:
                if name == "per_position_cache" and round_ >= args.before_repeats:
                    continue
                n = calls[size, name]
                start = time.perf_counter()
                for _ in range(n):
                    out = jax.block_until_ready(prog())
                times[size, name].append((time.perf_counter() - start) / n)
                outputs[size, name] = out

        results = {"device": device_description(device), "threads": args.threads,
                   "repeats": args.repeats, "jax": jax.__version__, "sizes": {}}
        for size in args.sizes:
            b = built[size]
            sampler = b["sampler"]
            entry = {"settings": b["settings"], "weights": "random init",
                     "full_units": sampler.full_units, "programs": {}}
            base = statistics.median(times[size, "full_pass"])
            for name in b["programs"]:
                s = summary(times[size, name])
                s["calls_per_sample"] = calls[size, name]
                s["times_full_pass"] = s["median_s"] / base
                if name != "full_pass":
                    x, work = outputs[size, name]
                    s["network_evaluations"] = (float(work) if name == "sequential_cache"
                                                else int(work) / sampler.full_units)
                    s["fixed_point_residual"] = float(np.abs(np.asarray(sampler.f(x))
                                                             - np.asarray(x)).max())
                entry["programs"][name] = s
            if size in (args.reference or []):
                reference = sampler.run("sequential").x
                tolerance = cached_tolerance(sampler.model, sampler.params, sampler.noise,
                                             sample=reference)
                entry["tolerance_atol"] = tolerance.atol
                for name, s in entry["programs"].items():
                    if name != "full_pass":
                        x = np.asarray(outputs[size, name][0])
                        s["max_abs_diff_vs_sequential"] = float(np.abs(x - np.asarray(reference)).max())
                        s["within_tolerance"] = bool(tolerance.holds([x], [np.asarray(reference)]))
            results["sizes"][size] = entry

    lines = [(f"PixelCNN++ cached loop vs one full pass; {results['device']}, {args.threads} "
              f"thread(s), {args.repeats} interleaved repeats ({args.before_repeats} of "
              "per_position_cache), random-init weights, 28x28x1."), "",
             ("| size | program | median (s) | spread (s) | × full pass | network evals "
              "| max abs(f(x) − x) | vs sequential |"), "|---|---|---|---|---|---|---|---|"]
    for size, entry in results["sizes"].items():
        st = entry["settings"]
        label = (f"{size} (nr_resnet {st['nr_resnet']}, {st['nr_filters']} filters, "
                 f"batch {st['batch']})")
        for name, s in entry["programs"].items():
            check = ""
            if "within_tolerance" in s:
                check = (f"{'within' if s['within_tolerance'] else 'OUTSIDE'} tol. "
                         f"{entry['tolerance_atol']:.3g} (max diff {s['max_abs_diff_vs_sequential']:.3g})")
            lines.append(f"| {label} | {name} | {s['median_s']:.4g} | {spread(s)} | "
                         f"{s['times_full_pass']:.2f} | {s.get('network_evaluations', 1.0):g} | "
                         f"{s.get('fixed_point_residual', 0.0):.3g} | {check} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({**results, "table": text}, indent=1))
    ok = all(s.get("within_tolerance", True) for e in results["sizes"].values()
             for s in e["programs"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
