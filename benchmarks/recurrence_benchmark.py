"""Parallel steps and one-process wall-clock of every ``ffsolve.solve_recurrence`` method vs the loop.

A random contracting GRU (``nn.GRU``'s initialisation, input size 4), batch 16, for T x H in a grid,
in PyTorch and/or JAX. For each (framework, T, H) every run is timed in one process by
``ffsolve.kit.harness.measure``: repeats interleaved round-robin, warm-up (JIT compilation)
excluded, each timed output checked against the ``sequential`` loop (bitwise at tol 0; the
largest absolute difference at tol > 0). Runs: ``<method>`` (tol 0, exact) and ``<method>_t<tol>``;
``<method>_autodiff`` variants use ``vmap(jacfwd)`` Jacobians instead of the cells' analytic ones
(``--jacobians``).

Cells that would not fit are skipped and listed in the table's notes: a dense-Jacobian method
(``newton``, ``damped_newton``) when its T x batch x H x H float32 Jacobians exceed
``--max-jacobian-gib``; ``damped_newton`` (T log T dense combines with an H x H inverse each) when
T·log2(T)·H³·batch exceeds ``--max-damped-flops``; any run whose untimed pilot call took longer
than ``--max-call-s`` (its estimated timing would exceed the per-cell budget).

    python benchmarks/recurrence_benchmark.py --quick --out results/recurrence_benchmark.md
    python benchmarks/recurrence_benchmark.py --T 1000 10000 100000 --H 8 32 64 --out full.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ffsolve.kit.harness import Candidate, measure
from ffsolve.kit.runs import format_tol
from ffsolve.recurrence import cells, solve_recurrence

METHODS = ("jacobi", "newton", "quasi_newton", "damped_newton")
INPUT_SIZE = 4


def _tol_text(tol: float) -> str:
    return "" if tol == 0 else f"_t{format_tol(tol)}"


def _arrays(framework, length, batch, hidden, seed, device):
    rng = np.random.default_rng(seed)
    s0 = (0.1 * rng.standard_normal((batch, hidden))).astype(np.float32)
    u = rng.standard_normal((length, batch, INPUT_SIZE)).astype(np.float32)
    s0, u = cells.to_framework((s0, u), framework)
    if framework == "torch":
        s0, u = s0.to(device), u.to(device)
    return s0, u


def _cell(framework, hidden, seed, device):
    weights = cells.random_gru_weights(hidden, INPUT_SIZE, seed=seed)
    arrays = cells.to_framework(weights, framework)
    if framework == "torch":
        arrays = tuple(a.to(device) for a in arrays)
    return cells.gru(*arrays)


def _runs(args, length, hidden):
    """(run name, method, tol, jacobian kind) of one cell, and the skipped ones with the reason."""
    runs, skipped = [("sequential", "sequential", 0.0, None)], []
    jac_gib = length * args.batch * hidden * hidden * 4 / 2**30
    for method in args.methods:
        for tol in args.tols:
            kinds = ["analytic"] + (["autodiff"] if args.jacobians and method in ("newton",
                                                                                 "quasi_newton")
                                    else [])
            for kind in kinds:
                name = method + ("_autodiff" if kind == "autodiff" else "") + _tol_text(tol)
                if method in ("newton", "damped_newton") and jac_gib > args.max_jacobian_gib:
                    skipped.append((name, (f"dense Jacobians {jac_gib:.1f} GiB > "
                                          f"{args.max_jacobian_gib} GiB")))
                    continue
                flops = length * math.log2(max(length, 2)) * hidden**3 * args.batch
                if method == "damped_newton" and flops > args.max_damped_flops:
                    skipped.append((name, f"T·log2T·H³·batch = {flops:.2g} > {args.max_damped_flops:.0e}"))
                    continue
                runs.append((name, method, tol, kind))
    return runs, skipped


def bench_cell(args, framework, length, hidden):
    cell = _cell(framework, hidden, args.seed, args.device)
    s0, u = _arrays(framework, length, args.batch, hidden, args.seed + 1, args.device)
    runs, skipped = _runs(args, length, hidden)

    def program(method, tol, kind):
        jac = cell if kind == "analytic" else None
        return lambda: solve_recurrence(cell.step, s0, u, method=method, tol=tol, jacobian=jac)

    candidates = []
    for name, method, tol, kind in runs:
        prog = program(method, tol, kind)
        start = time.perf_counter()
        prog()  # pilot (also the JIT compilation): refuse runs that would blow the budget
        seconds = time.perf_counter() - start
        if seconds > args.max_call_s and name != "sequential":
            skipped.append((name, f"pilot call {seconds:.0f} s > {args.max_call_s:.0f} s"))
            continue
        candidates.append(Candidate(name, prog))
    measured = measure(candidates, repeats=args.repeats, warmup=1)
    loop = measured["sequential"].timing.median_s
    rows = []
    for name, m in measured.items():
        res = m.result
        rows.append({
            "framework": framework, "T": length, "H": hidden, "batch": args.batch, "run": name,
            "method": res.method, "tol": res.tol, "iterations": res.iterations,
            "newton_iterations": getattr(res, "newton_iterations", 0),
            "polish_iterations": getattr(res, "polish_iterations", 0),
            "fallbacks": getattr(res, "fallbacks", 0),
            "network_evaluations": res.network_evaluations, "converged": res.converged,
            "bitwise_equal": m.bitwise_equal, "max_abs_diff": m.max_abs_diff,
            "median_s": m.timing.median_s, "iqr_s": m.timing.iqr_s,
            "repeats": m.timing.repeats, "speedup_vs_loop": loop / m.timing.median_s,
            "session": m.session,
        })
    return rows, [(framework, length, hidden, n, why) for n, why in skipped]


def markdown(rows, skipped, args) -> str:
    head = ("| framework | T | H | run | steps (Newton + polish) | net. evals | bitwise | "
            "max abs diff | median time | × loop |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        steps = str(r["iterations"])
        if r["newton_iterations"]:
            steps += f" ({r['newton_iterations']} + {r['polish_iterations']})"
        lines.append(
            f"| {r['framework']} | {r['T']} | {r['H']} | {r['run']} | {steps} | "
            f"{r['network_evaluations']:.3g} | {'yes' if r['bitwise_equal'] else 'no'} | "
            f"{r['max_abs_diff']:.2g} | {_seconds(r['median_s'])} | {r['speedup_vs_loop']:.2f} |")
    notes = [f"- skipped {fw} T={t} H={h} {name}: {why}" for fw, t, h, name, why in skipped]
    meta = (f"Random GRU (nn.GRU init, input 4), batch {args.batch}, device {args.device}, "
            f"compute threads {args.threads}, {args.repeats} interleaved timed repeats after 1 "
            "warm-up round, one process per (framework, T, H); × loop = loop median / run median.")
    return meta + "\n\n" + head + "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="T 1000 and 10000 at H 8, T 1000 at H 32; tol 1e-5 and 0; with --jacobians")
    p.add_argument("--T", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--H", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frameworks", nargs="+", default=["torch", "jax"], choices=["torch", "jax"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--tols", type=float, nargs="+", default=[1e-5, 0.0])
    p.add_argument("--jacobians", action="store_true",
                   help="also time newton/quasi_newton with autodiff (vmap(jacfwd)) Jacobians")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (JAX uses its default backend)")
    p.add_argument("--threads", type=int, default=None, help="torch compute threads")
    p.add_argument("--max-jacobian-gib", type=float, default=2.0)
    p.add_argument("--max-damped-flops", type=float, default=2e10)
    p.add_argument("--max-call-s", type=float, default=20.0,
                   help="skip a run whose pilot call took longer (its timing would pass ~2 min)")
    p.add_argument("--out", required=True, help="markdown table path (a .json twin is written too)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    grid = [(t, h) for t in args.T for h in args.H]
    if args.quick:
        grid, args.jacobians = [(1000, 8), (10000, 8), (1000, 32)], True
    rows, skipped = [], []
    if "jax" in args.frameworks and args.device != "cpu":
        import jax

        if jax.default_backend() == "cpu":  # no CUDA wheels: a CPU JAX beside a GPU torch misleads
            args.frameworks = [f for f in args.frameworks if f != "jax"]
            skipped.append(("jax", "-", "-", "all", f"JAX has no {args.device} backend here"))
    for framework in args.frameworks:
        for length, hidden in grid:
            print(f"== {framework} T={length} H={hidden}", file=sys.stderr, flush=True)
            r, s = bench_cell(args, framework, length, hidden)
            rows += r
            skipped += s
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(markdown(rows, skipped, args))  # after every cell: partial results survive
            out.with_suffix(".json").write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=1))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
