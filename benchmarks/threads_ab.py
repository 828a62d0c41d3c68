"""One thread against two, and OpenMP's wait policy: the measurement behind the thread settings of
``ffsolve.runtime.limit_threads``.

For each OpenMP wait policy (``passive``: idle workers sleep; the library's default: they spin a
while first) a fresh process times, at 1 and 2 intra-op threads interleaved round by round, a
GRU over T = 1,000 by the loop and by Jacobi (``ffsolve.solve_recurrence``, H 8, batch 8) and
2,000 small matrix-vector products (128 x 128, the size of rnn_backprop's backward steps).
Medians of the rounds; the ratio is 2 threads' time over 1 thread's.

    ../shared/tools/quiet-run -- .venv/bin/python benchmarks/threads_ab.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

POLICIES = ("passive", "default")
ROUNDS = 7


def child(rounds: int) -> dict:
    import warnings

    import torch

    import ffsolve
    from ffsolve.recurrence import cells

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    cell = cells.random_gru(8, 4, seed=1)
    inputs, s0 = torch.randn(1000, 8, 4), torch.zeros(8, 8)
    weight, vector = torch.randn(128, 128) * 0.05, torch.randn(128, 1)

    def matvecs():
        h = vector
        for _ in range(2000):
            h = torch.tanh(weight @ h)
        return h

    programs = {
        "GRU T 1000 H 8, loop": lambda: ffsolve.solve_recurrence(cell.step, s0, inputs, "sequential"),
        "GRU T 1000 H 8, jacobi": lambda: ffsolve.solve_recurrence(cell.step, s0, inputs, "jacobi"),
        "2000 x (128 x 128 matvec, tanh)": matvecs,
    }
    times = {(name, t): [] for name in programs for t in (1, 2)}
    for _ in range(rounds):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, program in programs.items():
                program()  # warm
                start = time.perf_counter()
                program()
                times[(name, threads)].append(time.perf_counter() - start)
    return {name: [statistics.median(times[(name, 1)]), statistics.median(times[(name, 2)])]
            for name in programs}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(ROUNDS)))
        return
    print("| OpenMP wait policy | program | 1 thread (ms) | 2 threads (ms) | 2 / 1 |")
    print("|---|---|---|---|---|")
    for policy in POLICIES:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                             capture_output=True, text=True).stdout
        for name, (one, two) in json.loads(out.strip().splitlines()[-1]).items():
            print(f"| {policy} | {name} | {one * 1e3:.2f} | {two * 1e3:.2f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
