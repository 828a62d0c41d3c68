"""``method="auto"``: the fastest method for this problem on this machine, found by timing.

An autotuner in the manner users know from cuDNN's benchmark mode, Triton's ``autotune`` and
PyTorch's TunableOp: the first call for a *key* times the candidates, keeps the winner, and every
later call with that key runs the winner alone.

* **The key** is the problem's signature: which solver, the map's module and name, the shapes,
  dtype and device, ``tol``, the compute threads, the candidate set, and the library version.
  Two maps of one shape under one name share a decision; pass ``key=`` to keep them apart.
* **Candidates**: ``ffsolve.solve``: ``sequential``, ``jacobi``, ``gs_jacobi`` and
  ``jacobi_gs`` at block ⌈√T⌉; ``solve_recurrence``: ``sequential``, ``jacobi``, ``newton``,
  ``quasi_newton``; plus any of the user's own (``extra={"name": fn}``, ``fn()`` returning the
  solution: a compiled loop, a cached sampler, ``torch.nn.GRU``).
* **Deadlines are cooperative**: each candidate runs with a deadline, checked by the solvers
  between their steps. No signals, so it works in threads, notebooks and on any OS, and leaves
  the caller's timers alone. Its warm-up (compiles) runs under a hard stop at the best time so
  far / (1 + :data:`ffsolve.deadline.TIE`) (a candidate that cannot beat the best by more than
  the tie would not change the choice); its timed run under an :class:`ffsolve.Deadline` with
  that hard stop, which also stops it once its progress projects it at over
  :data:`ffsolve.deadline.MARGIN` × the best time (:mod:`ffsolve.deadline`). A candidate stopped
  either way loses; so every win by more than the tie is found unless a run's progress comes late
  and all at once, and the first call costs at most about (number of candidates) × the best time
  plus compiles, less where candidates lose by more than the margin. ``sequential`` runs first:
  it is the reference every answer is checked against. The user's own candidates cannot be
  interrupted.
* **Exact means bitwise**: at ``tol=0`` a candidate answers only if its result equals the
  sequential result bit for bit (``allow_within_tolerance=atol`` > 0 admits a converged result
  within max-abs ``atol`` of it instead). At ``tol > 0`` a candidate answers if it converged
  (every candidate runs with the same stopping rule).
* **Decisions persist**: in memory, and in a JSON file when one is configured
  (:func:`configure`, or the ``FFSOLVE_AUTOTUNE_FILE`` environment variable); a later process
  reads it. ``replay=True`` pilots nothing: a key without a decision is an error naming it.

Every result of an ``auto`` call carries ``autotune`` (a dict): the chosen method, whether this
call piloted, each candidate's time (``None``: stopped by the deadline) and whether it was
eligible, and for a piloting call its whole time; a piloting call's ``network_evaluations``
counts every candidate's work.

This module is the public face. Its machinery is :mod:`ffsolve.tuning`, below the solvers:
``ffsolve.solve`` and ``ffsolve.solve_recurrence`` hand it their own entry points for
``method="auto"``, as :func:`solve_auto` and :func:`solve_recurrence_auto` here do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ffsolve import tuning
from ffsolve.recurrence.solve import METHODS, RecurrenceResult, solve_recurrence
from ffsolve.solvers.core import get_solver, solve
from ffsolve.tuning import (  # noqa: F401  (the machinery, below the solvers: ffsolve.tuning)
    RECURRENCE_CANDIDATES,
    SOLVE_CANDIDATES,
    _read,
    _threads,
    configure,
    decisions,
    forget,
    lookup,
    make_key,
    store,
)


def solve_auto(f, x0, *, block_size=None, tol: float = 0.0, max_iters=None, axis: int = 0,
               candidates=SOLVE_CANDIDATES, extra: Mapping[str, Callable] | None = None,
               allow_within_tolerance: float = 0.0, key: str | None = None):
    """``ffsolve.solve(f, x0, method="auto", ...)``: see the module docstring."""
    return tuning.solve_auto(f, x0, solve=solve, get_solver=get_solver, block_size=block_size,
                             tol=tol, max_iters=max_iters, axis=axis, candidates=candidates,
                             extra=extra, allow_within_tolerance=allow_within_tolerance, key=key)


def solve_recurrence_auto(step, s0, inputs, *, tol: float = 0.0, max_iters=None, jacobian=None,
                          damping=None, time_axis: int = 0, check_loop: bool = True,
                          candidates=RECURRENCE_CANDIDATES,
                          extra: Mapping[str, Callable] | None = None,
                          allow_within_tolerance: float = 0.0, key: str | None = None):
    """``ffsolve.solve_recurrence(step, s0, inputs, method="auto", ...)``."""
    return tuning.solve_recurrence_auto(
        step, s0, inputs, solve_recurrence=solve_recurrence, methods=METHODS,
        result_type=RecurrenceResult, tol=tol, max_iters=max_iters, jacobian=jacobian,
        damping=damping, time_axis=time_axis, check_loop=check_loop, candidates=candidates,
        extra=extra, allow_within_tolerance=allow_within_tolerance, key=key)
