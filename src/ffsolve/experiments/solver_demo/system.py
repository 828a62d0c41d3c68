"""The triangular map: x_t = tanh(Σ_{s<t} L_ts x_s + b_t) for a random strictly lower-triangular L.

No model, no data. The scale of L (``coupling``) sets how strongly positions depend on each other:
small, and Jacobi converges in few iterations; large, and it approaches the worst case T.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ffsolve.kit import numpy_rng


def make_map(length: int, batch: int, coupling: float, seed: int) -> tuple[Callable, np.ndarray]:
    """The map f (triangular along axis 0) and its initial guess (zeros), ``(length, batch)`` float64."""
    rng = numpy_rng(seed, "solver_demo", "tanh_map", "weights")
    weights = np.tril(rng.normal(size=(length, length)), k=-1) * coupling / np.sqrt(length)
    bias = rng.normal(size=(length, batch))

    def f(x: np.ndarray) -> np.ndarray:
        return np.tanh(weights @ x + bias)

    return f, np.zeros((length, batch))


def contract_candidates():
    """A tiny instance for the contract test: every method of ``ffsolve.available_methods()``
    through ``ffsolve.solve`` on the map (the blocked ones at a block size that does not divide T),
    each with a traced twin."""
    import ffsolve
    from ffsolve.kit import Candidate, RunSpec, uses_blocks

    f, x0 = make_map(23, 3, 1.5, seed=7)
    out = []
    for method in ffsolve.available_methods():
        spec = RunSpec(method, 5 if uses_blocks(method) else None)

        def program(spec=spec, trace=False):
            return ffsolve.solve(f, x0, method=spec.method, block_size=spec.block_size, trace=trace)

        out.append(Candidate(spec, program, traced=lambda program=program: (program(trace=True), {})))
    return out
