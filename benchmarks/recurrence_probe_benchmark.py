"""What the ``tol=0`` exactness probe of ``ffsolve.solve_recurrence`` costs, and what the JAX
per-call trace (the guard against stale closures) costs.

For a random GRU (``nn.GRU``'s initialisation, input 4) at T x H x batch, in PyTorch and JAX, each
parallel method at ``tol=0`` is timed with ``check_loop=True`` (the default: a few positions
recomputed as the loop computes them) and ``check_loop=False``, in one process, repeats
interleaved, after a warm-up; the table gives the medians, min–max, and the probe's share of the
call. Same weights and inputs for both; their outputs are checked identical.

    python benchmarks/recurrence_probe_benchmark.py --T 1000 --H 8 --batch 16 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ffsolve.recurrence import cells, solve_recurrence


def _time(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    x = out.x
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()
    return (time.perf_counter() - start) / calls


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--H", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frameworks", nargs="+", default=["torch", "jax"])
    parser.add_argument("--methods", nargs="+", default=["jacobi", "quasi_newton", "newton"])
    args = parser.parse_args(argv)

    print(f"GRU T={args.T} H={args.H} batch={args.batch}, tol=0; median [min–max] of "
          f"{args.repeats} interleaved repeats")
    print("| framework | method | steps | probe on (ms) | probe off (ms) | probe share |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    s0 = (0.1 * rng.standard_normal((args.batch, args.H))).astype(np.float32)
    u = rng.standard_normal((args.T, args.batch, 4)).astype(np.float32)
    for framework in args.frameworks:
        cell = cells.gru(*cells.to_framework(cells.random_gru_weights(args.H, 4, seed=1),
                                             framework))
        fs0, fu = cells.to_framework((s0, u), framework)
        for method in args.methods:
            runs = {flag: (lambda flag=flag: solve_recurrence(cell, fs0, fu, method,
                                                              check_loop=flag))
                    for flag in (True, False)}
            outs = {flag: run() for flag, run in runs.items()}  # warm-up (compiles)
            same = np.array_equal(np.asarray(outs[True].x), np.asarray(outs[False].x))
            if not same:
                raise SystemExit(f"{framework} {method}: probe on/off outputs differ")
            times = {True: [], False: []}
            for _ in range(args.repeats):
                for flag in (True, False):
                    times[flag].append(_time(runs[flag], 1))
            on, off = statistics.median(times[True]), statistics.median(times[False])
            print(f"| {framework} | {method} | {outs[True].iterations} | {on * 1e3:.2f} "
                  f"[{min(times[True]) * 1e3:.2f}–{max(times[True]) * 1e3:.2f}] | {off * 1e3:.2f} "
                  f"[{min(times[False]) * 1e3:.2f}–{max(times[False]) * 1e3:.2f}] | "
                  f"{(on - off) / off:+.1%} |")


if __name__ == "__main__":
    main()
