"""ffsolve: feedforward computation as a triangular system, solved in parallel.

Reimplements Song et al., "Accelerating Feedforward Computation via Parallel Nonlinear Equation
Solving" (ICML 2021). The public entry point is :func:`ffsolve.solve` (differentiable in
PyTorch by the implicit-function argument, :mod:`ffsolve.solvers.grad`); Markov recurrences
s_t = step(s_{t−1}, u_t) also have :func:`ffsolve.solve_recurrence` (Newton-type methods;
differentiable in PyTorch and JAX). Autoregressive models with a categorical output per
position are sampled in parallel, with a stated guarantee, by :func:`ffsolve.sample_autoregressive`.
"""

from ffsolve._version import __version__
from ffsolve.deadline import Deadline
from ffsolve.recurrence import (
    NotBitwiseWarning,
    RecurrenceResult,
    StepCheck,
    available_recurrence_backwards,
    available_recurrence_methods,
    check_step,
    solve_recurrence,
)
from ffsolve.solvers import (
    STOPPED_BY,
    NotTriangularWarning,
    SolveResult,
    SolveTrace,
    WindowedMap,
    available_backwards,
    available_methods,
    get_solver,
    register_solver,
    solve,
    uses_blocks,
    windowed,
)
from ffsolve.speculative import SampleResult, sample_autoregressive

__all__ = [
    "STOPPED_BY",
    "Deadline",
    "NotBitwiseWarning",
    "NotTriangularWarning",
    "RecurrenceResult",
    "StepCheck",
    "check_step",
    "SolveResult",
    "SolveTrace",
    "WindowedMap",
    "__version__",
    "available_backwards",
    "available_methods",
    "available_recurrence_backwards",
    "available_recurrence_methods",
    "get_solver",
    "register_solver",
    "SampleResult",
    "sample_autoregressive",
    "solve",
    "solve_recurrence",
    "uses_blocks",
    "windowed",
]
