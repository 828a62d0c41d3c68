"""suffix_jacobi and sliding_jacobi (issue 20, item 4) against jacobi and the loops: network passes
of work, iterations and one-process time (the shared harness: repeats interleaved, every timed
output checked against the sequential run), on

* MADE sampling from a trained checkpoint (``--made-checkpoint``, e.g. the default DAG's
  ``results/made/mnist/model.pt``; batch 100): every ``ffsolve.solve`` method and
  ``sequential_cache``, through the workflow's own :func:`ffsolve.experiments.made.system.candidates`;
* random GRU recurrences written as triangular maps (``rnn_forward``'s windowed map; ``--cases``,
  PyTorch; batch 16): ``sequential`` (one time step per call, through the map's window; beside
  it ``sequential_whole_map``, the whole map per call), Jacobi, ``suffix_jacobi`` and
  ``sliding_jacobi`` through ``ffsolve.solve``,
  ``solve_recurrence``'s own Jacobi (``recurrence_jacobi``, which also computes from the first
  time step that moved) and its loop (the baseline every run is checked against).

* the frontier on ``solve_recurrence`` itself (``--frontier-cases``, random GRUs, batch 16, in
  PyTorch and in JAX; ``--frontier-frameworks``): its loop (``sequential``, the reference), its
  Jacobi with the frontier (``jacobi``: each step computes from the first time step that moved in
  the previous one; in JAX the last L time steps, L rounded up to a power of two, one compiled
  program per L), the same Jacobi without it (``plain_jacobi``: every time step, every step;
  ``ffsolve.recurrence.solve.frontier(False)``), and the framework's own kernel
  (``sequential_native``: ``torch.nn.GRU``, or the step in one jitted ``lax.scan``; held to a
  derived tolerance, not bits). The programs are the rnn_forward experiment's own
  (:func:`ffsolve.experiments.rnn_forward.system.candidates`).

    ../shared/tools/quiet-run -- .venv/bin/python benchmarks/sliding_benchmark.py \
        --made-checkpoint <dag>/results/made/mnist/model.pt --cases gru_T1000_H8 gru_T1000_H32
    .venv/bin/python benchmarks/sliding_benchmark.py --cases \
        --frontier-cases gru_T1000_H8 gru_T1000_H32 gru_T10000_H8 gru_T10000_H32  # the frontier only
    .venv/bin/python benchmarks/sliding_benchmark.py --quick     # a smoke run (tests)

JAX triangular maps are left out: a window of a new length is a new shape, which eager JAX
compiles anew (hundreds of programs per solve), so the sliced evaluation does not pay there
without a compiled driver of its own (``solve_recurrence``'s JAX frontier is that driver for
recurrences: at most ⌈log₂T⌉ + 1 window lengths).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from ffsolve.kit.harness import measure


def _table(title: str, measurements: dict, baseline: str) -> str:
    base = measurements[baseline].timing.median_s
    lines = [f"### {title}", "",
             f"| run | iterations | network passes | median s (spread) | × {baseline} | exact / within tolerance |",
             "|---|---|---|---|---|---|"]
    for name, m in measurements.items():
        t = m.timing
        q1, q3 = np.percentile(t.times_s, [25, 75]) if len(t.times_s) > 1 else (t.min_s, t.max_s)
        spread = f"IQR {q1:.4g}–{q3:.4g}"
        exact = "bitwise" if m.bitwise_equal else ("within" if m.within_tolerance else "NO")
        lines.append(f"| {name} | {m.result.iterations} | {m.result.network_evaluations:.2f} | "
                     f"{t.median_s:.4g} ({spread}) | {base / t.median_s:.2f} | {exact} |")
    return "\n".join(lines) + "\n"


def made_table(checkpoint: str, batch: int, block_sizes, repeats: int, min_sample_s: float) -> str:
    import torch

    from ffsolve.experiments.made.model import load_checkpoint
    from ffsolve.experiments.made.system import candidates, logistic_noise, run_specs

    model, _ = load_checkpoint(checkpoint)
    model.eval()
    noise = logistic_noise(batch, model.nin, 0)
    methods = ["sequential", "sequential_cache", "jacobi", "gs_jacobi", "suffix_jacobi", "sliding_jacobi"]
    with torch.no_grad():
        found = measure(candidates(model, noise, 1e-6, run_specs(methods, block_sizes)),
                        repeats=repeats, min_sample_s=min_sample_s)
    return _table(f"MADE {checkpoint} (batch {batch}, D {model.nin})", found, "sequential_cache")


def recurrence_table(name: str, batch: int, block_sizes, repeats: int, min_sample_s: float) -> str:
    import ffsolve
    from ffsolve.experiments.rnn_forward.cases import parse_case, random_case_arrays
    from ffsolve.experiments.rnn_forward.system import build_cell, to_framework, triangular_map
    from ffsolve.kit import Candidate, RunSpec

    case = parse_case(name)
    weights, inputs = random_case_arrays(case, batch=batch, input_size=4, seed=0)
    cell = build_cell(case.cell, weights, "torch")
    u = to_framework(inputs, "torch")
    s0 = to_framework(np.zeros((batch, case.hidden), np.float32), "torch")
    f = triangular_map(cell, s0, u, "torch")
    x0 = to_framework(np.zeros((case.length, batch, case.hidden), np.float32), "torch")
    # ffsolve.solve's sequential computes one time step per call through the map's (bitwise)
    # window; sequential_whole_map is the same loop on the map without its window (the whole map
    # T times, T² step rows: left out past T = 2,000). Every run is checked against
    # solve_recurrence's loop.
    specs = [RunSpec("sequential"), RunSpec("jacobi"), RunSpec("suffix_jacobi")] + [
        RunSpec("sliding_jacobi", b) for b in block_sizes]
    out = [Candidate(spec, lambda spec=spec: ffsolve.solve(f, x0, method=spec.method,
                                                          block_size=spec.block_size))
           for spec in specs]
    if case.length <= 2000:
        def whole(x):  # f without its window
            return f(x)

        def run_whole():
            res = ffsolve.solve(whole, x0, method="sequential")
            res.method = "sequential_whole_map"
            return res

        out.append(Candidate(RunSpec("sequential_whole_map"), run_whole))
    loop = RunSpec("sequential_loop")  # solve_recurrence's loop: one step call per time step

    def run_loop():
        res = ffsolve.solve_recurrence(cell, s0, u, "sequential")
        return ffsolve.SolveResult(x=res.x, iterations=res.iterations, converged=True,
                                   method="sequential_loop", block_size=None, tol=0.0,
                                   sequence_length=case.length, network_evaluations=1.0)

    out.append(Candidate(loop, run_loop))

    def run_recurrence_jacobi():  # solve_recurrence's own Jacobi: from the first moved step on
        res = ffsolve.solve_recurrence(cell, s0, u, "jacobi", check_loop=False)
        return ffsolve.SolveResult(x=res.x, iterations=res.iterations, converged=res.converged,
                                   method="recurrence_jacobi", block_size=None, tol=0.0,
                                   sequence_length=case.length,
                                   network_evaluations=res.network_evaluations)

    out.append(Candidate(RunSpec("recurrence_jacobi"), run_recurrence_jacobi))
    found = measure(out, repeats=repeats, min_sample_s=min_sample_s, reference="sequential_loop")
    return _table(f"{name} as a triangular map (PyTorch, batch {batch})", found, "sequential_loop")


def frontier_table(name: str, framework: str, batch: int, repeats: int, min_sample_s: float) -> str:
    """``solve_recurrence``'s loop, Jacobi with and without the frontier, and the framework's own
    kernel on one random case, interleaved in one process, every run checked against the loop."""
    import dataclasses

    from ffsolve.experiments.rnn_forward.cases import parse_case, random_case_arrays
    from ffsolve.experiments.rnn_forward.system import NATIVE, candidates
    from ffsolve.kit import Candidate, RunSpec
    from ffsolve.recurrence.solve import frontier

    case = parse_case(name + ("_jax" if framework == "jax" else ""))
    weights, inputs = random_case_arrays(case, batch=batch, input_size=4, seed=0)
    # The experiment's own programs; their traced twins (trace=True solves) are not needed here.
    found = {c.name: dataclasses.replace(c, traced=None)
             for c in candidates(case, weights, inputs, ["sequential", "jacobi", NATIVE])}

    def plain(program=found["jacobi"].program):  # the same program, the frontier switched off
        with frontier(False):
            return program()

    runs = [found["sequential"], found["jacobi"], Candidate(RunSpec("plain_jacobi"), plain),
            found[NATIVE]]
    measured = measure(runs, repeats=repeats, min_sample_s=min_sample_s, reference="sequential")
    label = "PyTorch" if framework == "torch" else "JAX"
    return _table(f"{name}: solve_recurrence's frontier ({label}, batch {batch})", measured,
                  "sequential")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--made-checkpoint")
    parser.add_argument("--made-batch", type=int, default=100)
    parser.add_argument("--made-blocks", type=int, nargs="+", default=[28, 112])
    parser.add_argument("--cases", nargs="*", default=["gru_T1000_H8", "gru_T1000_H32", "gru_T10000_H8"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--blocks", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-sample-s", type=float, default=0.2)
    parser.add_argument("--frontier-cases", nargs="*",
                        default=["gru_T1000_H8", "gru_T1000_H32", "gru_T10000_H8", "gru_T10000_H32"])
    parser.add_argument("--frontier-frameworks", nargs="+", choices=["torch", "jax"],
                        default=["torch", "jax"])
    parser.add_argument("--quick", action="store_true", help="one tiny case, one repeat")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.cases, args.batch, args.blocks, args.repeats, args.min_sample_s = ["gru_T64_H4"], 2, [8], 1, 0.0
        args.frontier_cases = ["gru_T64_H4"]
    parts = []
    if args.made_checkpoint:
        parts.append(made_table(args.made_checkpoint, args.made_batch, args.made_blocks, args.repeats,
                                args.min_sample_s))
    for name in args.cases:
        parts.append(recurrence_table(name, args.batch, args.blocks, args.repeats, args.min_sample_s))
    for name in args.frontier_cases:
        for framework in args.frontier_frameworks:
            parts.append(frontier_table(name, framework, args.batch, args.repeats, args.min_sample_s))
    text = "\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
