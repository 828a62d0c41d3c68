"""How much of a tol-0 recurrence solve comes after its change reaches the last bits, and how far
a projecting deadline's projection overestimates a run's time: the measurements behind
``ffsolve.deadline.TO_LAST_BITS`` and ``ffsolve.deadline.MARGIN``.

For each rnn_forward case (the default workflow's weights and inputs) and parallel method, the
solve runs with a projecting :class:`ffsolve.Deadline` that never stops it (``beat`` huge,
``observe`` 0: progress is computed on every step), and the step at which the largest change
first falls to :func:`ffsolve.deadline.last_bits` is read off, in steps and in time. The
projection (elapsed / the largest progress so far) is compared with the run's true time at every
step from a tenth of the run on (the deadline's default ``observe``); "opening" is the steps before
the change first falls to a tenth of the first step's (a Newton method's first steps can barely
move, then converge fast). Ratios, so the machine matters little; times are one run after a warm-up, one thread.

    python benchmarks/last_bits_share.py --checkpoint results/rnn_forward/mnist/model.pt \\
        --data resources/data/mnist.npz

(``mnist`` needs the default DAG's checkpoint and prepared data; without them only the random
cases run.)
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import ffsolve.recurrence.solve as recurrence_solve
from ffsolve.deadline import OBSERVE, Deadline
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
    torch.set_num_threads(1)
    steps_seen: list[dict] = []  # one per projected step
    original = recurrence_solve.progress

    def watch(settled, changes=(), floor=None):
        done = original(settled, changes, floor)
        if changes and floor is not None:
            steps_seen.append(dict(time=time.perf_counter(), step=len(changes),
                                   change=changes[-1], first=changes[0], floor=floor, done=done))
        return done

    recurrence_solve.progress = watch
    print("| case | method | steps | at the last bits from step | share of steps after "
          "| share of time after | largest projected / true time | same, after the opening |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        case = parse_case(name, args.hidden_size)
        if case.trained and not (args.checkpoint and args.data):
            print(f"| {name} | — | skipped: needs --checkpoint and --data | | | | | |")
            continue
        weights, inputs, *_ = case_arrays(case, settings, seed=args.seed, checkpoint=args.checkpoint,
                                          data_path=args.data)
        cell = build_cell(case.cell, weights, "torch")
        u = torch.as_tensor(inputs)
        s0 = torch.zeros(u.shape[1], case.hidden)
        for method in args.methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                solve_states(cell, s0, u, RunSpec(method), damping=100.0)  # warm-up, untimed
                steps_seen.clear()
                start = time.perf_counter()
                res = solve_states(cell, s0, u, RunSpec(method), damping=100.0,
                                   deadline=Deadline(beat=1e9, observe=0.0, start=start))
                total = time.perf_counter() - start
            print(f"| {name} | {method} | {res.iterations} | " + " | ".join(
                _columns(steps_seen, start, total, res.iterations)) + " |")


def _columns(seen: list[dict], start: float, total: float, iterations: int) -> list[str]:
    """The last bits' step and shares, and the projection's largest overestimate (all steps from
    ``OBSERVE`` of the run on; and those after the opening)."""
    at = next((s for s in seen if s["change"] <= s["floor"]), None)
    if at is None:
        cells = ["never", "", ""]
    else:
        cells = [str(at["step"]), f"{(iterations - at['step']) / iterations:.0%}",
                 f"{1 - (at['time'] - start) / total:.0%}"]
    best, worst, after_opening, opened = 0.0, 0.0, 0.0, False
    for s in seen:
        best = max(best, s["done"])
        opened = opened or s["change"] <= s["first"] / 10
        elapsed = s["time"] - start
        if elapsed < OBSERVE * total or best <= 0:
            continue
        ratio = elapsed / best / total
        worst = max(worst, ratio)
        if opened:
            after_opening = max(after_opening, ratio)
    return cells + [f"{worst:.2f}", f"{after_opening:.2f}"]

if __name__ == "__main__":
    main()
