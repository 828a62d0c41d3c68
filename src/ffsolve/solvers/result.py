"""The record every solve returns (:class:`SolveResult`, :class:`SolveTrace`, the stop names
:data:`STOPPED_BY`) and the warnings a solve may issue: the leaf of :mod:`ffsolve.solvers` that
the drivers (:mod:`ffsolve.solvers.core`, :mod:`ffsolve.solvers.compiled`), the recurrence
solver and the autotuner all build on, importing nothing of ffsolve. Every name here is also
importable from :mod:`ffsolve.solvers.core`, :mod:`ffsolve.solvers` and :mod:`ffsolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

Array = Any


@dataclass
class SolveTrace:
    """Per-iteration record of a solve, for convergence plots.

    Index k means "after k calls of f"; index 0 is the initial guess ``x0``.

    Attributes:
        change: ``(iterations,)`` — L2 norm of x_k − x_{k−1}, for k = 1..iterations; shape
            ``(iterations, batch)`` when the solve was given ``trace_batch_axis``.
        error: ``(iterations + 1,)`` — L2 norm of x_k − x_final for k = 0..iterations (the last
            entry is 0); ``(iterations + 1, batch)`` with ``trace_batch_axis``.
        iterates: ``(iterations + 1, *x0.shape)`` NumPy copies of every iterate, on the host.
    """

    change: np.ndarray
    error: np.ndarray
    iterates: np.ndarray


#: What can stop a run (``SolveResult.stopped_by``). A compiled run's ``stopped_by`` is the code of
#: its name here: ``ffsolve.STOPPED_BY[int(res.stopped_by)]``.
STOPPED_BY = ("fixed_point", "tolerance", "exact_prefix", "max_iters", "deadline", "sequential")


@dataclass
class SolveResult:
    """What every method returns; every field is always present.

    Under ``jax.jit`` or ``jax.vmap`` (the compiled driver, see :func:`solve`) the fields the
    run decides are JAX scalars (per lane under ``vmap``): ``iterations`` (int32),
    ``network_evaluations`` (float), ``converged`` (bool), ``stopped_by`` (an int32 code into
    :data:`STOPPED_BY`), ``final_change`` and ``causality_violation`` (the change's dtype;
    ``final_change`` stays ``None`` for ``sequential``). With ``compiled=True`` on concrete
    arrays they are Python values, as from the Python driver. The record is a JAX pytree, so a
    jitted or vmapped function may return it whole (``method``, ``block_size``, ``tol``,
    ``sequence_length`` are static).

    Attributes:
        x: the solution, same array type, shape, dtype and device as ``x0``.
        iterations: calls of ``f`` made (each call is one parallel step).
        converged: True when the stopping rule was met (or the result is exact by the
            triangular argument) before ``max_iters`` ran out.
        method: the method's registry name.
        block_size: positions per block (``None`` for ``sequential`` and ``jacobi``).
        tol: the stopping threshold used on max |x_new − x_old|.
        sequence_length: T, the length of ``x0`` along ``axis``.
        trace: a :class:`SolveTrace` when ``trace=True`` was asked for, else ``None``.
        network_evaluations: work done, in full passes of the map: positions computed divided by
            the positions of one full pass. Every call of a generic ``f`` computes all T
            positions, so here it equals ``iterations``; fast paths that compute only a window or
            use a cache report less (DESIGN.md §6).
        stopped_by: what ended the run: ``"fixed_point"`` (a step changed nothing),
            ``"tolerance"`` (the change fell to ``tol`` > 0), ``"exact_prefix"`` (the count
            bound: T positions known exact by the triangular argument), ``"max_iters"`` (the
            budget ran out first), ``"deadline"`` (a time limit), or ``"sequential"`` (the loop,
            each position computed once).
        final_change: max |x_new − x_old| of the last step (``None`` for the loop).
        causality_violation: the largest change seen at a position that the triangular argument
            says was already final (0.0 when none). Above zero, ``f`` is not triangular along
            ``axis`` (or not deterministic): the count bound does not hold, ``converged`` is
            False and a :class:`NotTriangularWarning` was issued.
        autotune: for ``method="auto"``, what :mod:`ffsolve.autotune` chose and measured.
    """

    x: Array
    iterations: int
    converged: bool
    method: str
    block_size: Optional[int]
    tol: float
    sequence_length: int
    trace: Optional[SolveTrace] = field(default=None, repr=False)
    network_evaluations: Optional[float] = None
    stopped_by: Optional[str] = None
    final_change: Optional[float] = None
    causality_violation: float = 0.0
    autotune: Optional[dict] = field(default=None, repr=False)

    def __post_init__(self):
        if self.network_evaluations is None:
            self.network_evaluations = float(self.iterations)


_LEAVES = ("x", "iterations", "converged", "network_evaluations", "stopped_by", "final_change",
           "causality_violation")
_STATIC = ("method", "block_size", "tol", "sequence_length", "trace", "autotune")
_PYTREE: list = []


def _register_pytree() -> None:
    """Make :class:`SolveResult` a JAX pytree (once, when a JAX solve first runs), so that a
    jitted or vmapped function may return the record whole."""
    if _PYTREE:
        return
    import jax

    def flatten(res):
        # A name (stopped_by of a Python-driver or sequential run) is static, not a leaf.
        names = tuple(k for k in _LEAVES if not isinstance(getattr(res, k), str))
        static = tuple((k, getattr(res, k)) for k in _LEAVES + _STATIC if k not in names)
        return tuple(getattr(res, k) for k in names), (names, static)

    def unflatten(aux, leaves):
        names, static = aux
        res = object.__new__(SolveResult)  # no __post_init__: the leaves may be placeholders
        for k, v in zip(names, leaves):
            setattr(res, k, v)
        for k, v in static:
            setattr(res, k, v)
        return res

    jax.tree_util.register_pytree_node(SolveResult, flatten, unflatten)
    _PYTREE.append(True)


class NotTriangularWarning(UserWarning):
    """``f`` changed a position that the triangular argument had made final."""


class NotBitwiseWarning(UserWarning):
    """A ``tol=0`` result that is not the user's loop's result bit for bit (see the message)."""
