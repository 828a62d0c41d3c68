"""rnn_forward benchmark: random-weight cases at long T (and wide H) through the workflow's own
measure job (``experiment.measure``: every run of a case in one process, repeats
interleaved, each timed result checked against the loop), outside the default DAG.

Each case is ``<cell>_T<T>_H<H>[_jax]`` as in ``rnn_forward.datasets``; the records go to
``<out>/<case>/<run>/metrics.json`` (the results contract), and the steps/time table of every case
is printed (the notebook's table). Runs whose dense Jacobians (newton, damped_newton: T x batch x
H x H floats) would pass ``--max-jacobian-gib`` are left out of that case, with the reason printed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rnn_forward_benchmark.py \
        --cases gru_T1000_H8 gru_T10000_H8 gru_T1000_H32 --out results/rnn_forward_benchmark
    .venv/bin/python benchmarks/rnn_forward_benchmark.py --device cuda --cases gru_T100000_H64 ...
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ffsolve.experiments.rnn_forward import plots, run_names
from ffsolve.experiments.rnn_forward.cases import parse_case
from ffsolve.experiments.rnn_forward.experiment import MeasureSettings, measure
from ffsolve.kit.harness import TimingSettings
from ffsolve.kit import load_runs
from ffsolve.runtime import limit_threads

DENSE = ("newton", "damped_newton")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["gru_T1000_H8", "gru_T10000_H8", "gru_T1000_H32"])
    parser.add_argument("--methods", nargs="+", default=["sequential", "jacobi", "newton", "quasi_newton"])
    parser.add_argument("--frontier-tols", nargs="*", type=float, default=[0.0, 1e-6, 1e-4, 1e-2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=4)
    parser.add_argument("--damping", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--min-sample-s", type=float, default=0.5)
    parser.add_argument("--max-jacobian-gib", type=float, default=4.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=Path("results/rnn_forward_benchmark"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = limit_threads(args.threads)
    timing = TimingSettings(args.repeats, args.warmup, threads, args.min_sample_s)
    records = []
    for name in args.cases:
        case = parse_case(name)
        gib = case.length * args.batch * case.hidden**2 * 4 / 2**30
        methods = [m for m in args.methods if m not in DENSE or gib <= args.max_jacobian_gib]
        if methods != args.methods:
            print(f"{name}: leaving out {sorted(set(args.methods) - set(methods))}: dense Jacobians "
                  f"{gib:.1f} GiB > --max-jacobian-gib {args.max_jacobian_gib}")
        settings = MeasureSettings(case.hidden, tuple(methods), tuple(args.frontier_tols), args.batch,
                                   args.input_size, 0.9, args.damping)
        runs = run_names(methods, args.frontier_tols)
        metrics = {r: args.out / name / r / "metrics.json" for r in runs}
        traces = {r: args.out / name / r / "trace.npz" for r in runs}
        measure(settings, dataset=name, seed=args.seed, timing=timing, metrics=metrics, traces=traces,
                     device=args.device, threads=threads)
        records += load_runs([metrics[r] for r in runs], [traces[r] for r in runs])
        print(plots.markdown_table(records), flush=True)


if __name__ == "__main__":
    main()
