"""Solvers for triangular systems: ``solve`` and the method registry."""

from ffsolve.solvers import methods as _methods  # noqa: F401  (registers the built-in methods)
from ffsolve.solvers import sliding as _sliding  # noqa: F401  (suffix_jacobi, sliding_jacobi)
from ffsolve.solvers.core import (
    STOPPED_BY,
    NotTriangularWarning,
    SolveResult,
    SolveTrace,
    available_methods,
    get_solver,
    register_solver,
    solve,
    uses_blocks,
)
from ffsolve.solvers.grad import available_backwards
from ffsolve.solvers.sliding import WindowedMap, windowed

__all__ = [
    "STOPPED_BY",
    "NotTriangularWarning",
    "SolveResult",
    "SolveTrace",
    "WindowedMap",
    "available_backwards",
    "available_methods",
    "get_solver",
    "register_solver",
    "solve",
    "uses_blocks",
    "windowed",
]
