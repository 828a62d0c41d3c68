"""Seeds, device choice and thread counts: the run-time settings every experiment shares."""

from __future__ import annotations

import os
import random
import sys

import numpy as np

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# What limit_threads sets to the thread count: OpenMP (PyTorch), MKL, OpenBLAS, and NPROC, the size
# of JAX's CPU intra-op pool (XLA reads it when the backend starts; unset, every core).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NPROC")


def limit_threads(threads: int) -> int:
    """Use at most ``threads`` CPU threads in this process (call before heavy imports run work).

    Snakemake hands each job ``threads``; a job that ignores it oversubscribes the cores of the
    others. The OpenMP variables only reach libraries that have not started their pools yet, so
    this also tells an already-imported PyTorch directly. JAX's CPU backend reads ``NPROC`` (the
    size of its intra-op pool; otherwise every core of the machine) and ``XLA_FLAGS`` when it
    starts, on the first computation: call this before any. Returns the thread count in force
    (PyTorch's, where PyTorch is installed), which is what a record states.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    # One thread: OpenMP's idle workers would only busy-wait beside it (small products then
    # jumped around in ~4 ms steps on 2 cores). Several: passive workers sleep between the
    # operations a step is made of, and waking them dominated small ones (benchmarks/threads_ab.py:
    # a 128 x 128 matrix-vector product took 27 times as long at 2 threads as at 1), so they keep
    # OpenMP's default, and an inherited setting is left alone.
    if threads == 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    flag = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in xla_flags:
        os.environ["XLA_FLAGS"] = f"{xla_flags} {flag}".strip()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # BLAS pools already loaded (NumPy's OpenBLAS, imported with ffsolve) ignore the variables.
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        import torch
    except ImportError:
        return threads
    torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def threads_in_use() -> int:
    """The compute threads of this process: PyTorch's count where PyTorch is loaded, else the
    count :func:`limit_threads` set (``NPROC``), else every core this process may run on (what
    JAX's CPU backend then uses)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    nproc = os.environ.get("NPROC", "")
    if nproc.isdigit() and int(nproc) > 0:
        return int(nproc)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch global generators (JAX takes explicit keys instead)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def torch_device(choice: str = "auto"):
    """The ``torch.device`` for ``auto|cpu|cuda``; ``cuda`` without a GPU is an error, not a fallback."""
    import torch

    _check_choice(choice)
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice == "cuda":
        raise RuntimeError(
            "device: cuda was asked for, but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). "
            "Set device: auto or device: cpu in the config, or run on a machine with a GPU."
        )
    return torch.device("cpu")


def jax_device(choice: str = "auto"):
    """The JAX device for ``auto|cpu|cuda``, with the same rules as :func:`torch_device`."""
    import jax

    _check_choice(choice)
    if choice == "cpu":
        return jax.devices("cpu")[0]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if gpus:
        return gpus[0]
    if choice == "cuda":
        raise RuntimeError(
            f"device: cuda was asked for, but JAX {jax.__version__} sees no GPU "
            f"(backends: {[d.platform for d in jax.devices()]}). "
            "Set device: auto or device: cpu in the config, or install jax[cuda12] on a GPU machine."
        )
    return jax.devices("cpu")[0]


def device_description(device) -> str:
    """A human-readable name of the hardware behind a torch or JAX device, for metrics files."""
    import platform

    kind = getattr(device, "type", None) or getattr(device, "platform", "cpu")
    if kind in ("cuda", "gpu"):
        try:
            import torch

            return f"cuda:{torch.cuda.get_device_name(0)}"
        except Exception:  # noqa: BLE001 - only a label; the device itself already works
            return f"gpu:{getattr(device, 'device_kind', 'unknown')}"
    return f"cpu:{_cpu_model() or platform.machine()} x{os.cpu_count()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _check_choice(choice: str) -> None:
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {list(DEVICE_CHOICES)}, got {choice!r}")
