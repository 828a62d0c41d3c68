"""Imported first by every script: thread settings before any numerical library loads, and
``src/ffsolve`` importable in environments where the package is not installed.

OpenMP reads its variables once, when PyTorch or NumPy load; setting them later (as
``ffsolve.runtime.limit_threads`` also does) is too late for the wait policy. Busy-waiting
OpenMP threads make small products on a shared 2-core machine 5-30x slower. The job's thread
count comes from the ``snakemake`` object Snakemake defines in the script's namespace.

The project's virtualenv installs ffsolve (``pip install -e .``); a conda environment created by
``snakemake --sdm conda`` holds only the third-party packages. Snakemake puts this folder on
``sys.path`` for every ``script:``, so importing this module first covers both.
"""

import os
import sys
from pathlib import Path

_job = getattr(sys.modules.get("__main__"), "snakemake", None)
if _job is not None:
    # Timed jobs hold every core but may compute on fewer (params.timing.threads); the same rule
    # as ffsolve.workflow.jobs.compute_threads, which cannot be imported before the variables are set.
    _timing = getattr(_job.params, "timing", None) or {}
    _wanted = _timing.get("threads") if hasattr(_timing, "get") else None
    _threads = min(int(_wanted), int(_job.threads)) if _wanted else int(_job.threads)
    # NPROC: the size of JAX's CPU intra-op pool (ffsolve.runtime.THREAD_VARIABLES).
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NPROC"):
        os.environ[_var] = str(_threads)
    if _threads == 1:  # the rule of ffsolve.runtime.limit_threads (passive workers at 2 threads
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # made small products 27x slower)

try:
    import ffsolve  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
