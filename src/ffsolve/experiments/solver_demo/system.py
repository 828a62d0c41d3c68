"""The triangular map: x_t = tanh(Σ_{s<t} L_ts x_s + b_t) for a random strictly lower-triangular L.

No model, no data. The scale of L (``coupling``) sets how strongly positions depend on each other:
small, and Jacobi converges in few iterations; large, and it approaches the worst case T.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import ffsolve
from ffsolve.experiments.solver_demo.layout import BLOCKED
from ffsolve.kit import AutoSettings, Candidate, add_auto, expand_runs, loop_pilot, numpy_rng, pilot_steps, split_auto


def make_map(length: int, batch: int, coupling: float, seed: int) -> tuple[Callable, np.ndarray]:
    """The map f (triangular along axis 0) and its initial guess (zeros), ``(length, batch)`` float64."""
    rng = numpy_rng(seed, "solver_demo", "tanh_map", "weights")
    weights = np.tril(rng.normal(size=(length, length)), k=-1) * coupling / np.sqrt(length)
    bias = rng.normal(size=(length, batch))

    def f(x: np.ndarray) -> np.ndarray:
        return np.tanh(weights @ x + bias)

    return f, np.zeros((length, batch))


def candidates(settings, seed: int, auto: AutoSettings | None = None,
               dataset: str = "tanh_map") -> list[Candidate]:
    """Every run of ``settings`` (the experiment's ``MeasureSettings``) on the seeded map, each
    with a traced twin, and ``auto`` over them (``auto``: its settings)."""
    f, x0 = make_map(settings.length, settings.batch, settings.coupling, seed)
    out = []
    specs, autos = split_auto(expand_runs(settings.methods, settings.block_sizes, blocked=BLOCKED))
    for spec in specs:
        def program(spec=spec, trace=False, deadline=None):
            return ffsolve.solve(f, x0, method=spec.method, block_size=spec.block_size,
                                 tol=settings.tol, trace=trace, trace_batch_axis=1 if trace else None,
                                 deadline=deadline)

        def traced(program=program):
            result = program(trace=True)
            error, change = result.trace.error, result.trace.change
            return result, {"error_mean": error.mean(axis=1), "error_std": error.std(axis=1),
                            "change_mean": change.mean(axis=1), "change_std": change.std(axis=1)}

        out.append(Candidate(spec, program, traced, extra={"coupling": settings.coupling}))
    # auto (ffsolve.kit.auto): the loop's first 2% of positions scaled by T/k predicts it; the
    # parallel methods run first under deadlines, the loop last, cut by the best time.
    pilot = loop_pilot(lambda k: ffsolve.solve(f, x0, method="sequential", max_iters=k),
                       pilot_steps(settings.length), settings.length)
    key = {"experiment": "solver_demo", "dataset": dataset, "shape": x0.shape,
           "dtype": x0.dtype, "device": "cpu", "coupling": settings.coupling, "tol": settings.tol}
    return add_auto(out, autos, settings=auto, baseline_pilot=pilot, key=key)


def contract_candidates():
    """A tiny instance for the contract test: every method of ``ffsolve.available_methods()``
    through ``ffsolve.solve`` on the map (the blocked ones at a block size that does not divide T),
    each with a traced twin."""
    from ffsolve.kit import RunSpec, uses_blocks

    f, x0 = make_map(23, 3, 1.5, seed=7)
    out = []
    for method in ffsolve.available_methods():
        spec = RunSpec(method, 5 if uses_blocks(method) else None)

        def program(spec=spec, trace=False):
            return ffsolve.solve(f, x0, method=spec.method, block_size=spec.block_size, trace=trace)

        out.append(Candidate(spec, program, traced=lambda program=program: (program(trace=True), {})))
    return out
