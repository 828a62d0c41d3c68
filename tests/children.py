"""Every experiment's contract instance measured in fresh processes at a set thread count
(tests/threads_child.py), shared by tests/experiments/test_contract.py and
tests/experiments/test_threads.py: jobs of tests/prefetch.py, run in the background while the rest
of the suite runs.

* ``one_thread_children``: a child per experiment at 1 thread, for the experiments of the tests
  that ask for it. The contract test checks its measurements; the thread test compares its
  outputs with the 2-thread child's.
* ``two_thread_children``: the same at 2 threads, for the thread test.

Each is ``{experiment: future of (report, arrays)}``: ``report`` the child's JSON line (the thread
counts in force, and ``contract``: what the harness measured of each contract candidate),
``arrays`` its saved outputs. Two children run at a time (this machine has two cores), the
longest first (PixelCNN++ compiles every method in JAX), so that two workers finish together.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import prefetch
from ffsolve.runtime import THREAD_VARIABLES

from ffsolve.experiments import EXPERIMENTS  # noqa: E402 (after the path set-up above, if any)
LONGEST_FIRST = ("pixelcnnpp", "rnn_forward")
CHILD = Path(__file__).with_name("threads_child.py")


def _child_env() -> dict:
    """This process's environment without any thread setting, so each child sets its own."""
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_cpu_multi_thread_eigen" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env["FFSOLVE_PROGRESS"] = "0"
    return env


def _run(experiment: str, threads: int, folder: Path, nice: int) -> tuple[dict, dict]:
    path = folder / f"{experiment}_{threads}.npz"
    # A background child may wait on the foreground tests for a core: a generous limit.
    done = prefetch.run([sys.executable, str(CHILD), experiment, str(threads), str(path)],
                        env=_child_env(), timeout=1800, nice=nice)
    if done.returncode != 0:
        raise AssertionError(f"{experiment} at {threads} thread(s) failed:\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(path) as saved:
        return report, {key: saved[key] for key in saved.files}


def _children(context: prefetch.Context, threads: int) -> dict:
    selected = {item.callspec.params["experiment"] for item in context.items
                if hasattr(item, "callspec") and "experiment" in item.callspec.params}
    order = sorted(selected or EXPERIMENTS,
                   key=lambda e: (LONGEST_FIRST.index(e) if e in LONGEST_FIRST else len(LONGEST_FIRST)))
    folder = context.tmp_path_factory.mktemp(f"children_{threads}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return {e: pool.submit(_run, e, threads, folder, context.nice) for e in order}


@prefetch.job("one_thread_children")
def one_thread(context: prefetch.Context) -> dict:
    return _children(context, 1)


@prefetch.job("two_thread_children")
def two_threads(context: prefetch.Context) -> dict:
    return _children(context, 2)
