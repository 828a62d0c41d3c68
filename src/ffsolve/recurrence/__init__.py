"""Newton-type parallel solvers for Markov recurrences s_t = step(s_{t−1}, u_t).

:func:`solve_recurrence` (also ``ffsolve.solve_recurrence``) with methods ``sequential``,
``jacobi``, ``newton`` (DEER), ``quasi_newton`` (quasi-DEER) and ``damped_newton`` (ELK-style);
built-in cells (GRU, LSTM, softplus RNN) with analytic Jacobians in :mod:`ffsolve.recurrence.cells`;
gradients through it (PyTorch, eager JAX; ``backward`` among :data:`BACKWARDS`) in
:mod:`ffsolve.recurrence.grad`.
"""

from ffsolve.recurrence import cells, grad
from ffsolve.recurrence.grad import BACKWARDS, available_recurrence_backwards
from ffsolve.recurrence.solve import (
    DEFAULT_DAMPING,
    METHODS,
    NotBitwiseWarning,
    RecurrenceResult,
    RecurrenceTrace,
    StepCheck,
    available_recurrence_methods,
    check_step,
    solve_recurrence,
)

__all__ = [
    "BACKWARDS",
    "DEFAULT_DAMPING",
    "METHODS",
    "NotBitwiseWarning",
    "RecurrenceResult",
    "RecurrenceTrace",
    "StepCheck",
    "available_recurrence_backwards",
    "available_recurrence_methods",
    "cells",
    "check_step",
    "grad",
    "solve_recurrence",
]
