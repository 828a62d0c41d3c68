"""The compute threads do not change any output: every run of every experiment, bit for bit the
same at 1 and at 2 threads.

Timed jobs compute on every core they hold (``timing.threads: null``), while tests, users and a
smaller machine compute on fewer; a record's ``bitwise_equal`` and every exactness claim carry
over only if the thread count moves no bit. Per experiment and thread count a fresh process
(tests/threads_child.py) calls ``ffsolve.runtime.limit_threads(n)`` before any work (JAX reads
``NPROC`` and ``XLA_FLAGS`` once, when its backend starts), measures every candidate of the
contract instance (``system.contract_candidates()``: every method and fast path; the 1-thread
measurements are what tests/experiments/test_contract.py checks) and, for the PyTorch experiments, runs every
exact method at the embedded default's sizes (the contract instances are too small for PyTorch to
split any operation across threads), and saves each output (``result.x``, what the harness
compares). The outputs at 1 and 2 threads are then compared byte for byte. The children run in
the background while the rest of the suite runs (tests/children.py, tests/prefetch.py).

Not a law of the libraries: PyTorch splits element-wise work on more than 32,768 elements into
one chunk per thread, and a transcendental function (sigmoid, softplus) computes the last elements
of each chunk with its scalar routine, whose last bit can differ from the SIMD one; a tensor whose
chunk boundary is not a multiple of the SIMD width can then change bits with the thread count.
The sizes checked here split evenly at 2 threads. If a run ever differs, do not loosen this test:
find out why, and have the experiment's records say that (and why) their outputs depend on the
thread count; this test then checks that claim.
"""

import numpy as np
import pytest

from children import EXPERIMENTS

pytestmark = pytest.mark.slow  # about a minute and a half on 2 idle cores, PixelCNN++'s compiles most


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_run_is_bitwise_the_same_at_one_and_two_threads(one_thread_children, two_thread_children,
                                                             experiment):
    found = {1: one_thread_children[experiment].result(), 2: two_thread_children[experiment].result()}
    for n, (report, arrays) in found.items():
        # The thread count was in force in every pool, JAX's included (it starts later, on the
        # first computation, and reads NPROC and the flag then).
        assert report["in_force"] == report["torch"] == n, report
        assert report["nproc"] == str(n), report
        assert f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}" in report["xla_flags"]
        scales = {key.split("/", 1)[0] for key in arrays}
        assert scales == ({"contract"} if experiment == "pixelcnnpp" else {"contract", "default"}), scales
    (report_one, one), (report_two, two) = found[1], found[2]
    # The harness's findings too (iterations, evaluations, flags, distance to sequential)
    assert report_one["contract"] == report_two["contract"], f"{experiment}: other measurements at 2 threads"
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
