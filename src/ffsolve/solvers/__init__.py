"""Solvers for triangular systems: ``solve`` and the method registry."""

from ffsolve.solvers import methods as _methods  # noqa: F401  (registers the built-in methods)
from ffsolve.solvers.core import (
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

__all__ = [
    "NotTriangularWarning",
    "SolveResult",
    "SolveTrace",
    "available_backwards",
    "available_methods",
    "get_solver",
    "register_solver",
    "solve",
    "uses_blocks",
]
