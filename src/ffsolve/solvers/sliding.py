"""Jacobi that recomputes only what can still change: ``suffix_jacobi`` and ``sliding_jacobi``.

After a Jacobi step, every position before the first one that changed is final: if x_{k+1} and
x_k agree on positions < p, then f(x_{k+1}) agrees with f(x_k) there (position t reads only
positions < t), so that prefix is a fixed point of the prefix system, whose fixed point is unique.
Position p itself is made exact by the next step (all it reads is final). So the next step need
only compute positions >= p; computing the others again spends work on values that cannot change.

* ``suffix_jacobi``: each step computes positions [start, T) only, where start is the first
  position that moved in the previous step (at least one more than the previous start: the count
  bound). At ``tol=0`` its iterates are ``jacobi``'s at every position (the skipped positions
  would not have changed), so its iterations are ``jacobi``'s and its result is the sequential one
  bit for bit; the work is less.
* ``sliding_jacobi`` (``block_size`` W): a window of W positions that slides forward as soon as its
  head settles: each step computes [start, start + W) and moves start to the first position that
  moved (at least start + 1). A GS-Jacobi whose block does not wait for its whole self to
  settle; at W = 1 it is the one-position sequential loop, at W = T it is ``suffix_jacobi``.

**The window contract.** A map may offer ``f.window(x, start, stop)``: the outputs at positions
[start, stop) along ``axis`` (an array shaped like ``x`` with stop − start positions there),
computed from ``x``, equal to ``f(x)[start:stop]``. Bit for bit where the sliced evaluation sums
in the same order as the full one; where it does not, the results are within the map's own
tolerance of ``sequential``, which the caller declares. Optionally ``f.window_cost(start, stop)``:
its work in full passes of ``f`` (default (stop − start) / T, for a map whose cost is spread evenly
over positions). Within one solve the methods call ``window`` with a non-decreasing ``start``, and
positions < start of ``x`` never change again. :func:`windowed` builds such a map from two
functions. A map without ``window`` is still solved correctly: each step calls ``f(x)`` and keeps
the window (one full pass of work, as ``jacobi``), and then the positions outside the window are
checked as the other methods check them (a change at a position known final means ``f`` is not
triangular). With ``window``, positions before the window are never recomputed, so nothing checks
them: the methods trust the map's triangular structure (and say so here).

``network_evaluations`` counts the work done: the sum over steps of each window's cost.
"""

from __future__ import annotations

from typing import Callable, Optional

from ffsolve.solvers import arrays
from ffsolve.solvers.core import Tracker, register_solver


class WindowedMap:
    """A triangular map with a window evaluator (see the module docstring's contract)."""

    def __init__(self, f: Callable, window: Callable, cost: Optional[Callable] = None, *,
                 bitwise: bool = True):
        if not callable(f) or not callable(window):
            raise ValueError("windowed(f, window) needs two callables: f(x) and window(x, start, stop)")
        if cost is not None and not callable(cost):
            raise ValueError("windowed(..., cost=) must be a callable cost(start, stop) -> passes")
        if not isinstance(bitwise, bool):
            raise ValueError(f"windowed(..., bitwise=) must be True or False, got {bitwise!r}")
        self.f, self._window, self._cost = f, window, cost
        self.bitwise = bitwise

    def __call__(self, x):
        return self.f(x)

    def window(self, x, start: int, stop: int):
        return self._window(x, start, stop)

    def window_cost(self, start: int, stop: int) -> Optional[float]:
        return None if self._cost is None else self._cost(start, stop)


def windowed(f: Callable, window: Callable, cost: Optional[Callable] = None, *,
             bitwise: bool = True) -> WindowedMap:
    """``f`` with the window evaluator ``window(x, start, stop)`` (and optionally its cost in full
    passes, ``cost(start, stop)``), for ``suffix_jacobi`` and ``sliding_jacobi``; and, when
    ``bitwise`` (the window's outputs are ``f(x)[start:stop]`` bit for bit, the default), for
    ``sequential``, which then computes one position per step (the loop a user would write) instead
    of the whole map T times. Declare ``bitwise=False`` for a window that sums in another order:
    ``sequential`` then calls ``f``, so it stays the reference the other methods are bitwise to.
    ``jacobi``, ``gs_jacobi`` and ``jacobi_gs`` call ``f`` as usual."""
    return WindowedMap(f, window, cost, bitwise=bitwise)


def _slide(f: Tracker, x0, *, width: Optional[int], tol, max_iters, axis, xp, method: str,
           block_size):
    length = x0.shape[axis]
    x = arrays.fresh_copy(x0)
    f.start(x)
    start, work, change, stopped_by = 0, 0.0, None, None
    while f.calls < max_iters:
        stop = length if width is None else min(start + width, length)
        y, cost = f.window(x, start, stop)
        work += cost
        window = arrays.index_along(axis, x.ndim, slice(start, stop))
        diff = y - x[window]
        change = arrays.max_abs(xp, diff)
        x = arrays.write(x, window, y)
        f.record(x)
        moved = arrays.first_moving(xp, diff, axis, tol)  # stop − start when nothing moved
        if moved == stop - start and stop == length:
            stopped_by = "fixed_point" if change == 0 else "tolerance"
            break
        # Positions before the first that moved are final; the window's head is exact (it read
        # only final positions), so the start advances by at least one: at most T steps.
        start += max(moved, 1)
        if start >= length:
            stopped_by = "exact_prefix"
            break
        if f.expired(start):
            stopped_by = "deadline"
            break
    res = f.result(x, converged=stopped_by in ("fixed_point", "tolerance", "exact_prefix"),
                   method=method, block_size=block_size, tol=tol, length=length,
                   stopped_by=stopped_by or "max_iters", final_change=change)
    res.network_evaluations = work
    return res


def suffix_jacobi(f: Tracker, x0, *, block_size, tol, max_iters, axis, xp):
    """Jacobi that computes, each step, only the positions from the first that moved on."""
    return _slide(f, x0, width=None, tol=tol, max_iters=max_iters, axis=axis, xp=xp,
                  method="suffix_jacobi", block_size=None)


def sliding_jacobi(f: Tracker, x0, *, block_size, tol, max_iters, axis, xp):
    """A window of ``block_size`` positions, Jacobi inside, sliding on as soon as its head settles."""
    return _slide(f, x0, width=block_size, tol=tol, max_iters=max_iters, axis=axis, xp=xp,
                  method="sliding_jacobi", block_size=block_size)


register_solver("suffix_jacobi", suffix_jacobi)
register_solver("sliding_jacobi", sliding_jacobi, uses_blocks=True)
