"""A self-contained demonstration of every method on a random nonlinear triangular map.

No model, no data: x_t = tanh(Σ_{s<t} L_ts x_s + b_t) for a random strictly lower-triangular L,
batched. It checks the workflow end to end in seconds and shows how the methods trade calls of f
against work per call. The scale of L sets how strongly positions depend on each other (small:
Jacobi converges in few iterations; large: close to the worst case T).
"""

from __future__ import annotations

import logging

import numpy as np

import ffsolve
from ffsolve.experiments.runs import parse_run_name
from ffsolve.jobs import Job
from ffsolve.results import write_metrics, write_trace
from ffsolve.runtime import device_description, seed_everything
from ffsolve.timing import time_call

log = logging.getLogger(__name__)


def make_map(length: int, batch: int, coupling: float, seed: int):
    """The map f and its initial guess (zeros), shapes ``(length, batch)``, float64."""
    rng = np.random.default_rng(seed)
    weights = np.tril(rng.normal(size=(length, length)), k=-1) * coupling / np.sqrt(length)
    bias = rng.normal(size=(length, batch))

    def f(x: np.ndarray) -> np.ndarray:
        return np.tanh(weights @ x + bias)

    return f, np.zeros((length, batch))


def run(job: Job) -> dict:
    """Solve with the run named by the ``run`` wildcard; write metrics and trace."""
    cfg = job.config["solver_demo"]
    seed = int(job.config["seed"])
    seed_everything(seed)
    method, block_size = parse_run_name(job.wildcards.run)
    f, x0 = make_map(cfg["length"], cfg["batch"], cfg["coupling"], seed)

    reference = ffsolve.solve(f, x0, method="sequential")
    traced = ffsolve.solve(
        f, x0, method=method, block_size=block_size, tol=cfg["tol"], trace=True, trace_batch_axis=1
    )
    timing_cfg = job.config["timing"]
    timing = time_call(
        lambda: ffsolve.solve(f, x0, method=method, block_size=block_size, tol=cfg["tol"]),
        repeats=timing_cfg["repeats"],
        warmup=timing_cfg["warmup"],
    )
    diff = float(np.max(np.abs(traced.x - reference.x)))
    log.info(
        "%s: %d iterations of %d, converged=%s, max |diff| vs sequential %.3g, median %.4f s",
        job.wildcards.run, traced.iterations, x0.shape[0], traced.converged, diff, timing.median_s,
    )
    record = {
        "experiment": "solver_demo",
        "dataset": job.wildcards.dataset,
        "method": method,
        "run": job.wildcards.run,
        "block_size": block_size,
        "tol": cfg["tol"],
        "sequence_length": x0.shape[0],
        "batch": cfg["batch"],
        "coupling": cfg["coupling"],
        "iterations": traced.iterations,
        "converged": traced.converged,
        "wall_time_s": timing.median_s,
        "timing": timing.as_dict(),
        "max_abs_diff_vs_sequential": diff,
        "exact_match": bool(np.array_equal(traced.x, reference.x)),
        "exact_match_tolerance": 0.0,
        "device": device_description(None),
        "threads": job.threads,
        "seed": seed,
    }
    write_trace(
        job.output.trace,
        error_mean=traced.trace.error.mean(axis=1),
        error_std=traced.trace.error.std(axis=1),
        change_mean=traced.trace.change.mean(axis=1),
        change_std=traced.trace.change.std(axis=1),
    )
    return write_metrics(job.output.metrics, record)
