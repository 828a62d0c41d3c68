"""ffsolve: feedforward computation as a triangular system, solved in parallel.

Reimplements Song et al., "Accelerating Feedforward Computation via Parallel Nonlinear Equation
Solving" (ICML 2021). The public entry point is :func:`ffsolve.solve`.
"""

from ffsolve.solvers import (
    SolveResult,
    SolveTrace,
    available_methods,
    get_solver,
    register_solver,
    solve,
)

__version__ = "0.1.0"

__all__ = [
    "SolveResult",
    "SolveTrace",
    "available_methods",
    "get_solver",
    "register_solver",
    "solve",
    "__version__",
]
