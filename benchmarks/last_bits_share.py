"""How much of a tol-0 recurrence solve comes after its change reaches the last bits: the
measurement behind ``ffsolve.deadline.TO_LAST_BITS``.

For each rnn_forward case (the default workflow's weights and inputs) and parallel method, the
solve runs with a projecting :class:`ffsolve.Deadline` that never stops it (``beat`` huge,
``observe`` 0: progress is computed on every step), and the step at which the largest change
first falls to :func:`ffsolve.deadline.last_bits` is read off. Counts of steps, not times: the
machine does not matter.

    python benchmarks/last_bits_share.py --checkpoint results/rnn_forward/mnist/model.pt \\
        --data resources/data/mnist.npz

(``mnist`` needs the default DAG's checkpoint and prepared data; without them only the random
cases run.)
"""

from __future__ import annotations

import argparse
import warnings

import torch

import ffsolve.recurrence.solve as recurrence_solve
from ffsolve.deadline import MIN_STEPS, Deadline
from ffsolve.experiments.rnn_forward.cases import parse_case
from ffsolve.experiments.rnn_forward.experiment import MeasureSettings, case_arrays
from ffsolve.experiments.rnn_forward.system import build_cell, solve_states
from ffsolve.kit.runs import RunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["gru_T1000_H8", "mnist"])
    parser.add_argument("--methods", nargs="+", default=["jacobi", "newton", "quasi_newton"])
    parser.add_argument("--checkpoint", help="the trained GRU (results/rnn_forward/mnist/model.pt)")
    parser.add_argument("--data", help="the prepared MNIST (resources/data/mnist.npz)")
    parser.add_argument("--seed", type=int, default=1234, help="config/config.yaml's seed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=4)
    args = parser.parse_args()
    settings = MeasureSettings(hidden_size=args.hidden_size, methods=(), frontier_tols=(),
                               batch=args.batch, input_size=args.input_size, softplus_radius=0.9,
                               damping=100.0)
    steps_seen: list[tuple[float, float]] = []  # (change, floor) per projected step
    original = recurrence_solve.progress

    def watch(settled, changes=(), floor=None):
        if changes and floor is not None:
            steps_seen.append((changes[-1], floor))
        return original(settled, changes, floor)

    recurrence_solve.progress = watch
    print("| case | method | steps | change at the last bits from step | share of steps after |")
    print("|---|---|---|---|---|")
    for name in args.cases:
        case = parse_case(name, args.hidden_size)
        if case.trained and not (args.checkpoint and args.data):
            print(f"| {name} | — | skipped: needs --checkpoint and --data | | |")
            continue
        weights, inputs, *_ = case_arrays(case, settings, seed=args.seed, checkpoint=args.checkpoint,
                                          data_path=args.data)
        cell = build_cell(case.cell, weights, "torch")
        u = torch.as_tensor(inputs)
        s0 = torch.zeros(u.shape[1], case.hidden)
        for method in args.methods:
            steps_seen.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                res = solve_states(cell, s0, u, RunSpec(method), damping=100.0,
                                   deadline=Deadline(beat=1e9, observe=0.0))
            # progress is projected from step MIN_STEPS on, one entry per step
            first = next((k for k, (change, floor) in enumerate(steps_seen) if change <= floor), None)
            if first is None:
                print(f"| {name} | {method} | {res.iterations} | never | |")
                continue
            at = first + MIN_STEPS
            share = (res.iterations - at) / res.iterations
            print(f"| {name} | {method} | {res.iterations} | {at} | {share:.0%} |")


if __name__ == "__main__":
    main()
