"""The four methods. Each finds the fixed point of a triangular map ``f`` in at most T calls.

Why at most T: if positions < e are already exact when ``f`` is called, then output positions
<= e are exact too (position t only reads positions < t). Each method below writes position e on
every call, so the exact prefix ``e`` grows by at least one per call, and after T calls the whole
iterate is the feedforward result. The methods keep count of ``e`` and stop once it reaches T,
so they never spend a call just to confirm what the triangular structure already guarantees.

The same argument is checked as they go: every call computes ``f`` at positions already known
final too, and those must come back unchanged (``Tracker.final``); a change there means ``f``
is not triangular along the axis and the result says so. Each result says what stopped it
(``stopped_by``) and its last change (``final_change``).
"""

from __future__ import annotations

import warnings

from ffsolve.solvers import arrays
from ffsolve.solvers.core import Tracker, register_solver
from ffsolve.solvers.result import NotBitwiseWarning


def sequential(f: Tracker, x0, *, block_size, tol, max_iters, axis, xp):
    """Ordinary feedforward evaluation: call t fixes position t. T calls; ``tol`` is unused.

    A map with a bitwise window evaluator (:func:`ffsolve.windowed`) computes only position t at
    call t, the loop a user would write, then calls ``f`` once on the result to check the
    declaration (two passes of work in all; a ``NotBitwiseWarning`` and ``final_change`` > 0 when
    it fails); any other map is called whole (T passes), its output kept at position t."""
    length = x0.shape[axis]
    x = arrays.fresh_copy(x0)
    f.start(x)
    one_position = getattr(f.f, "window", None) is not None and getattr(f.f, "bitwise", False)
    work = 0.0
    stopped_by = "sequential" if max_iters >= length else "max_iters"
    for t in range(min(length, max_iters)):
        at_t = arrays.index_along(axis, x.ndim, slice(t, t + 1))
        if one_position:
            y, cost = f.window(x, t, t + 1)
            work += cost
        else:
            y = f(x)[at_t]
        x = arrays.write(x, at_t, y)
        f.record(x)
        if t + 1 < length and f.expired(t + 1):
            stopped_by = "deadline"
            break
    final_change = None
    if one_position and stopped_by == "sequential":
        # The window was declared bitwise; one call of f on the result checks it: the loop's
        # result is f's fixed point only if every window equals f there bit for bit.
        final_change = arrays.max_abs(xp, f.f(x) - x)  # f itself: a check, not a parallel step
        work += 1.0
        if final_change != 0:
            warnings.warn(
                f"ffsolve.solve('sequential'): f.window was declared bitwise, but f(x) differs from "
                f"the one-position loop's result by up to {final_change:.3g}, so that result is not "
                "the whole map's and the other methods will not reproduce it: declare "
                "ffsolve.windowed(..., bitwise=False) (sequential then calls f itself)",
                NotBitwiseWarning, stacklevel=3)
    result = f.result(
        x, converged=stopped_by == "sequential", method="sequential", block_size=None, tol=tol,
        length=length, stopped_by=stopped_by, final_change=final_change,
    )
    if one_position:
        result.network_evaluations = work
    return result


def jacobi(f: Tracker, x0, *, block_size, tol, max_iters, axis, xp):
    """x_k = f(x_{k−1}) at every position at once, until the change is <= tol."""
    length = x0.shape[axis]
    everything = arrays.index_along(axis, x0.ndim, slice(None))
    x = arrays.fresh_copy(x0)
    f.start(x)
    exact = 0
    change = None
    stopped_by = "max_iters"
    while f.calls < max_iters:
        y = f(x)
        diff = y - x  # one difference for the change and the triangular check
        f.final(diff, exact, axis)
        exact += 1
        change = arrays.max_abs(xp, diff)
        # Copy y into x rather than keep f's own output: f's bits can depend on the memory layout
        # of its input (BLAS picks kernels by strides), and every other method, ``sequential``
        # included, calls f on a copy of x0. Keeping y would break "bit for bit equal to
        # sequential" for an f whose output is laid out unlike its input (e.g. after a permute).
        x = arrays.write(x, everything, y)
        f.record(x)
        stopped_by = _stop(change, tol, exact, length, f, diff, axis, xp)
        if stopped_by:
            break
    return f.result(
        x, converged=stopped_by in _CONVERGED, method="jacobi", block_size=None, tol=tol,
        length=length, stopped_by=stopped_by or "max_iters", final_change=change,
    )


_CONVERGED = ("fixed_point", "tolerance", "exact_prefix")


def _stop(change, tol, exact, length, f, diff, axis, xp) -> str | None:
    """What stops the run after this call, if anything (``diff``: this call's change, for the
    settled prefix a projecting deadline asks for)."""
    if change <= tol:
        return "fixed_point" if change == 0 else "tolerance"
    if exact >= length:
        return "exact_prefix"
    if f.expired(lambda: max(exact, arrays.first_moving(xp, diff, axis, tol)), change):
        return "deadline"
    return None


def gs_jacobi(f: Tracker, x0, *, block_size, tol, max_iters, axis, xp):
    """Blocks of ``block_size`` positions in order (Gauss–Seidel across blocks), Jacobi inside.

    The active block is updated from each call until its change is <= tol (or it is exact by
    count). The call that shows a block has stopped changing was made with that block already
    final, so its output for the *next* block is a genuine Jacobi update of it: it is written
    straight away instead of being thrown away, saving one call per block.
    """
    length = x0.shape[axis]
    ndim = x0.ndim
    x = arrays.fresh_copy(x0)
    f.start(x)
    start, exact = 0, 0
    change, cut = None, False
    while True:
        # Blocks already known exact (a settled block also makes the next position exact) need
        # no call of their own.
        while start < length and exact >= min(start + block_size, length):
            start = min(start + block_size, length)
        if start >= length or f.calls >= max_iters or cut:
            break
        end = min(start + block_size, length)
        block = arrays.index_along(axis, ndim, slice(start, end))
        y = f(x)
        # At tol = 0 every position before the active block is final (settled with no change, or
        # exact by count); at tol > 0 a settled block is only within tol, so nothing is checked.
        if tol == 0 and start > 0:
            before = arrays.index_along(axis, ndim, slice(0, start))
            f.final(y[before] - x[before], start, axis)
        change = arrays.max_abs(xp, y[block] - x[block])
        x = arrays.write(x, block, y[block])
        exact = min(exact + 1, end)
        settled = change <= tol
        if settled or exact >= end:
            if settled:
                # y[end] was computed from a prefix that is now exact, so it is exact too.
                exact = min(end + 1, length)
            start = end
            if start < length:
                following = arrays.index_along(
                    axis, ndim, slice(start, min(start + block_size, length))
                )
                x = arrays.write(x, following, y[following])
        f.record(x)
        # Blocks before ``start`` are final; inside the active block, the count bound.
        cut = f.expired(max(start, exact))
    done = start >= length
    return f.result(
        x, converged=done, method="gs_jacobi", block_size=block_size, tol=tol,
        length=length, final_change=change,
        stopped_by=("fixed_point" if change == 0 else "tolerance" if change <= tol
                    else "exact_prefix") if done else ("deadline" if cut else "max_iters"),
    )


def jacobi_gs(f: Tracker, x0, *, block_size, tol, max_iters, axis, xp):
    """All blocks at once (Jacobi across blocks), one position of each block per call (GS inside).

    Call k of a sweep writes position k of every block; as in the original, the first call of
    each sweep writes every position (a full Jacobi step), which costs nothing extra. Stops once a
    call's output differs from the current iterate by <= tol everywhere, i.e. the iterate is a
    fixed point to within ``tol``.
    """
    length = x0.shape[axis]
    ndim = x0.ndim
    x = arrays.fresh_copy(x0)
    f.start(x)
    exact, step = 0, 0
    residual = None
    stopped_by = None
    while f.calls < max_iters:
        y = f(x)
        diff = y - x
        f.final(diff, exact, axis)
        residual = arrays.max_abs(xp, diff)
        if step == 0:
            x = arrays.write(x, arrays.index_along(axis, ndim, slice(None)), y)
        else:
            strided = arrays.index_along(axis, ndim, slice(step, length, block_size))
            x = arrays.write(x, strided, y[strided])
        # Position ``exact`` is written on this call: it sits at offset ``step`` in its block.
        exact += 1
        step = (step + 1) % block_size
        f.record(x)
        stopped_by = _stop(residual, tol, exact, length, f, diff, axis, xp)
        if stopped_by:
            break
    return f.result(
        x, converged=stopped_by in _CONVERGED, method="jacobi_gs", block_size=block_size,
        tol=tol, length=length, stopped_by=stopped_by or "max_iters", final_change=residual,
    )


register_solver("sequential", sequential)
register_solver("jacobi", jacobi)
register_solver("gs_jacobi", gs_jacobi, uses_blocks=True)
register_solver("jacobi_gs", jacobi_gs, uses_blocks=True)
