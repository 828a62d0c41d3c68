"""The compute threads do not change any output: every run of every experiment, bit for bit the
same at 1 and at 2 threads.

Timed jobs compute on every core they hold (``timing.threads: null``), while tests, users and a
smaller machine compute on fewer; a record's ``bitwise_equal`` and every exactness claim carry
over only if the thread count moves no bit. Per experiment and thread count a fresh process
(tests/threads_child.py) calls ``ffsolve.runtime.limit_threads(n)`` before any work (JAX reads
``NPROC`` and ``XLA_FLAGS`` once, when its backend starts), runs every candidate of the contract
instance (``system.contract_candidates()``: every method and fast path; see tests/test_contract.py)
once and, for the PyTorch experiments, every exact method at the embedded default's sizes (the
contract instances are too small for PyTorch to split any operation across threads), and saves
each output (``result.x``, what the harness compares). The outputs at 1 and 2 threads are then
compared byte for byte.

Not a law of the libraries: PyTorch splits element-wise work on more than 32,768 elements into
one chunk per thread, and a transcendental function (sigmoid, softplus) computes the last elements
of each chunk with its scalar routine, whose last bit can differ from the SIMD one; a tensor whose
chunk boundary is not a multiple of the SIMD width can then change bits with the thread count.
The sizes checked here split evenly at 2 threads. If a run ever differs, do not loosen this test:
find out why, and have the experiment's records say that (and why) their outputs depend on the
thread count; this test then checks that claim.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ffsolve.runtime import THREAD_VARIABLES

pytestmark = pytest.mark.slow  # about a minute and a half on 2 idle cores, PixelCNN++'s compiles most

EXPERIMENTS = ("solver_demo", "made", "pixelcnnpp", "densenet", "rnn_backprop", "rnn_forward")
THREADS = (1, 2)
# The longest first (PixelCNN++ compiles every method in JAX), so that two workers finish together.
LONGEST_FIRST = ("pixelcnnpp", "rnn_forward")

CHILD = Path(__file__).with_name("threads_child.py")


def _child_env() -> dict:
    """This process's environment without any thread setting, so each child sets its own."""
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_cpu_multi_thread_eigen" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env["FFSOLVE_PROGRESS"] = "0"
    return env


def _run(experiment: str, threads: int, folder) -> tuple[dict, dict]:
    path = folder / f"{experiment}_{threads}.npz"
    done = subprocess.run([sys.executable, str(CHILD), experiment, str(threads), str(path)],
                          env=_child_env(), capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{experiment} at {threads} thread(s) failed:\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(path) as saved:
        return report, {key: saved[key] for key in saved.files}


@pytest.fixture(scope="module")
def outputs(request, tmp_path_factory):
    """``{(experiment, threads): future of (report, arrays)}`` for the experiments selected in
    this session, two children at a time (this machine has two cores)."""
    selected = {item.callspec.params["experiment"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")
                and "experiment" in item.callspec.params}
    order = sorted(selected or EXPERIMENTS,
                   key=lambda e: (LONGEST_FIRST.index(e) if e in LONGEST_FIRST else len(LONGEST_FIRST)))
    folder = tmp_path_factory.mktemp("threads")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(e, n): pool.submit(_run, e, n, folder) for e in order for n in THREADS}
    return futures


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_run_is_bitwise_the_same_at_one_and_two_threads(outputs, experiment):
    found = {n: outputs[experiment, n].result() for n in THREADS}
    for n, (report, arrays) in found.items():
        # The thread count was in force in every pool, JAX's included (it starts later, on the
        # first computation, and reads NPROC and the flag then).
        assert report["in_force"] == report["torch"] == n, report
        assert report["nproc"] == str(n), report
        assert f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}" in report["xla_flags"]
        scales = {key.split("/", 1)[0] for key in arrays}
        assert scales == ({"contract"} if experiment == "pixelcnnpp" else {"contract", "default"}), scales
    (_, one), (_, two) = found[1], found[2]
    assert sorted(one) == sorted(two), f"{experiment}: other runs at 2 threads"
    differ = []
    for key in sorted(one):
        a, b = one[key], two[key]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            gap = (float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
                   if a.shape == b.shape else float("nan"))
            differ.append(f"{key} (max |diff| {gap:.3g})")
    assert not differ, (f"{experiment}: outputs differ between 1 and 2 compute threads: {differ}. "
                        "Find out why; see this module's docstring.")
