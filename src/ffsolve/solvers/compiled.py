"""The compiled driver: ``ffsolve.solve``'s four methods as one JAX program.

Under ``jax.jit`` or ``jax.vmap`` (or with ``compiled=True``) :func:`ffsolve.solve` runs the
method here: a ``lax.while_loop`` (``sequential``: a ``lax.fori_loop`` of T steps) whose carry
holds the step count, the iterate, the method's bookkeeping (exact prefix, active block), the
last change, the largest change seen at positions already known final (the triangular check)
and the stop code. The stopping rules are those of the Python driver in
:mod:`ffsolve.solvers.methods`, step for step:

* a step that changed nothing stops (``"fixed_point"``); with ``tol`` > 0 a step whose
  max |change| is <= ``tol`` stops (``"tolerance"``), the comparison made as the Python driver
  makes it (the float32 change against the float64 ``tol``: here against the largest value of
  the change's type that is <= ``tol``, which decides every case alike);
* the count bound: after k calls of ``f`` at least k positions are exact (for ``gs_jacobi``,
  the blocks up to the one holding the exact prefix), so the loop never makes more than T calls
  (``"exact_prefix"``);
* ``max_iters`` calls at most (``"max_iters"``).

Every write is a ``jnp.where`` on a position mask rather than a slice, so every call of ``f``
sees the whole array of one shape and computes every position, as in the Python driver (and
XLA cannot narrow ``f`` to the positions a step keeps, which could change its bits).

:func:`run` returns the iterate and ``(iterations, stop code, final change, causality
violation)``; codes index :data:`ffsolve.STOPPED_BY`; ``sequential`` knows its count and stop
from the shapes. :func:`result` makes the :class:`~ffsolve.SolveResult`: JAX scalars under a
transformation, Python values for a concrete run (``compiled=True``).
"""

from __future__ import annotations

import numpy as np

from ffsolve.solvers.result import STOPPED_BY, NotTriangularWarning, SolveResult

METHODS = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs")
CONVERGED = ("fixed_point", "tolerance", "exact_prefix")

RUNNING = -1
FIXED_POINT, TOLERANCE, EXACT_PREFIX, MAX_ITERS = (
    STOPPED_BY.index(name) for name in ("fixed_point", "tolerance", "exact_prefix", "max_iters"))
CONVERGED_CODES = tuple(STOPPED_BY.index(name) for name in CONVERGED)


def threshold(tol: float, dtype):
    """``(compare_dtype, t)``: for a value v of ``dtype`` (the type of |x_new − x_old|),
    ``v <= t`` computed in ``compare_dtype`` holds exactly when ``float(v) <= tol`` does (the
    Python driver's test). Floats narrower than float64 compare in float32 (which holds them
    exactly) against the largest float32 <= ``tol``; integers against ⌊tol⌋ (clipped to the
    type's range)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return dtype, np.array(min(int(np.floor(tol)), int(info.max)), dtype=dtype)
    if dtype == np.float64:
        return dtype, np.float64(tol)
    t = np.float32(tol)
    if float(t) > tol:
        t = np.nextafter(t, np.float32(-np.inf))
    return np.dtype(np.float32), t


def run(f, x0, *, method: str, block_size, tol: float, max_iters: int, axis: int):
    """The method ``method`` on ``x0`` (a JAX array or tracer), traceable.

    Returns ``(x, stats)``: the iterate, and ``(iterations, code, final_change, violation)``,
    JAX scalars: the calls of ``f``; the stop code (an index into :data:`~ffsolve.STOPPED_BY`);
    the last step's max |change|; the largest change at positions the triangular argument had
    made final. ``sequential`` returns no stats (``()``): T calls, or ``max_iters``.

    No :class:`~ffsolve.NotTriangularWarning` comes from inside the program: a host callback
    (``jax.debug.callback``, even behind a ``lax.cond``) cost a tenth of a millisecond or more
    per solve on a CPU, more than a whole small solve (``benchmarks/jax_driver.py --quick``'s
    map), so a traced result says it in its fields (``causality_violation`` > 0, ``converged``
    False); a concrete one warns in :func:`ffsolve.solve`.
    """
    import jax
    import jax.numpy as jnp

    if method not in METHODS:
        raise ValueError(
            f"method {method!r} has no compiled driver: under jax.jit or jax.vmap (or with "
            f"compiled=True) ffsolve.solve runs one of {list(METHODS)}")
    length = x0.shape[axis]
    ndim = x0.ndim
    shape = [1] * ndim
    shape[axis] = length
    position = jnp.arange(length).reshape(shape)  # broadcasts against x along ``axis``
    positions = jnp.arange(length)
    others = tuple(i for i in range(ndim) if i != axis)
    empty = int(np.prod(x0.shape)) == 0
    x0 = jnp.asarray(x0)
    checked = []

    def call(x):
        y = f(x)
        if not checked:  # at trace time: the checks the Python driver's Tracker makes
            _check_output(y, tuple(x0.shape))
            checked.append(True)
        return y

    def per_position(diff):
        """max |diff| over everything but ``axis``: one value per position, shape (T,)."""
        a = jnp.abs(diff)
        if empty:
            return jnp.zeros((length,), a.dtype)
        return jnp.max(a, axis=others) if others else a

    def keep(x, mask, y):
        return jnp.where(mask, y.astype(x.dtype), x)

    if method == "sequential":
        steps = min(length, max_iters)

        def step(t, x):
            return keep(x, position == t, call(x))

        return jax.lax.fori_loop(0, steps, step, x0), ()

    # The change's type (|y − x| for f's own output type) and the stopping threshold in it.
    change_type = jax.eval_shape(lambda x: jnp.abs(call(x) - x), x0).dtype
    compare_type, limit = threshold(tol, change_type)
    limit = jnp.asarray(limit, compare_type)
    zero = jnp.zeros((), change_type)

    def stop(change, exact):
        """``_stop`` of :mod:`ffsolve.solvers.methods`: a code, or RUNNING."""
        settled = change.astype(compare_type) <= limit
        return jnp.where(settled, jnp.where(change == 0, FIXED_POINT, TOLERANCE),
                         jnp.where(exact >= length, EXACT_PREFIX, RUNNING)).astype(jnp.int32)

    def larger(old, new):  # Python's max(old, new): ``new`` only when it is larger
        return jnp.where(new > old, new, old)

    def prefix_max(per, count):
        return jnp.max(jnp.where(positions < count, per, zero))

    if method in ("jacobi", "jacobi_gs"):
        # Both write position k on call k + 1: the exact prefix is the call count.
        strided = method == "jacobi_gs"

        def body(carry):
            k, x, _, violation, _ = carry
            y = call(x)
            per = per_position(y - x)
            violation = larger(violation, prefix_max(per, k))
            change = jnp.max(per)
            if strided:  # the first call of a sweep writes everything, then one per block
                step = k % block_size
                x = keep(x, (step == 0) | (position % block_size == step), y)
            else:
                x = y.astype(x.dtype)
            return k + 1, x, change, violation, stop(change, k + 1)

        def going(carry):
            k, _, _, _, code = carry
            return (code == RUNNING) & (k < max_iters)

        init = (jnp.int32(0), x0, zero, zero, jnp.int32(RUNNING))
        k, x, change, violation, code = jax.lax.while_loop(going, body, init)
        code = jnp.where(code == RUNNING, MAX_ITERS, code)
    elif method == "gs_jacobi":
        k, x, change, violation, done = _gs_jacobi(
            call, x0, per_position, keep, position, positions, zero, length, block_size, tol,
            compare_type, limit, max_iters)
        code = jnp.where(done, jnp.where(change == 0, FIXED_POINT,
                                         jnp.where(change.astype(compare_type) <= limit,
                                                   TOLERANCE, EXACT_PREFIX)),
                         MAX_ITERS).astype(jnp.int32)
    else:
        raise AssertionError(method)
    return x, (k, code, change, violation)


def result(x, stats, *, method, block_size, tol, max_iters, axis, length):
    """The :class:`~ffsolve.SolveResult` of a compiled run (``stats`` as :func:`run` returns
    them): Python values where ``stats`` are concrete (or, for ``sequential``, known from the
    shapes), JAX scalars where they are traced."""
    import jax
    import jax.numpy as jnp

    common = dict(x=x, method=method, block_size=block_size, tol=tol, sequence_length=length)
    traced = isinstance(x, jax.core.Tracer)
    if method == "sequential":
        stopped = "sequential" if max_iters >= length else "max_iters"
        steps = min(length, max_iters)
        if not traced:
            return SolveResult(iterations=steps, converged=stopped == "sequential",
                               stopped_by=stopped, **common)
        # Under a transformation every method's record holds JAX scalars, this one's too.
        return SolveResult(iterations=jnp.int32(steps),
                           converged=jnp.bool_(stopped == "sequential"),
                           stopped_by=jnp.int32(STOPPED_BY.index(stopped)),
                           network_evaluations=jnp.asarray(steps, jnp.result_type(float)),
                           causality_violation=jnp.zeros((), jax.eval_shape(jnp.abs, x).dtype),
                           **common)
    k, code, change, violation = stats
    if not traced:
        stopped = STOPPED_BY[int(code)]
        violation = float(violation)  # as the Python driver's record has them
        return SolveResult(iterations=int(k), converged=stopped in CONVERGED and not violation > 0,
                           stopped_by=stopped, final_change=float(change),
                           causality_violation=violation, **common)
    converged = jnp.isin(code, jnp.asarray(CONVERGED_CODES)) & ~(violation > 0)
    return SolveResult(iterations=k, converged=converged, stopped_by=code, final_change=change,
                       causality_violation=violation,
                       network_evaluations=k.astype(jnp.result_type(float)), **common)


def _gs_jacobi(call, x0, per_position, keep, position, positions, zero, length, block_size,
               tol, compare_type, limit, max_iters):
    """``methods.gs_jacobi`` as a while loop: blocks in order, Jacobi inside the active one."""
    import jax
    import jax.numpy as jnp

    def skip(start, exact):
        """Blocks already known exact need no call: move ``start`` to the block holding
        ``exact`` (``exact >= start`` always; blocks start at multiples of ``block_size``)."""
        return jnp.maximum(start, jnp.where(exact >= length, length,
                                            (exact // block_size) * block_size))

    def body(carry):
        k, x, start, exact, _, violation = carry
        end = jnp.minimum(start + block_size, length)
        y = call(x)
        per = per_position(y - x)
        if tol == 0:  # every position before the active block is final
            before = jnp.max(jnp.where(positions < start, per, zero))
            violation = jnp.where(before > violation, before, violation)
        change = jnp.max(jnp.where((positions >= start) & (positions < end), per, zero))
        x = keep(x, (position >= start) & (position < end), y)
        exact = jnp.minimum(exact + 1, end)
        settled = change.astype(compare_type) <= limit
        moved = settled | (exact >= end)
        exact = jnp.where(settled, jnp.minimum(end + 1, length), exact)
        # The call that finished a block was made with it final: its output for the next block
        # is a genuine Jacobi update of it.
        following = moved & (position >= end) & (position < end + block_size)
        x = keep(x, following, y)
        start = jnp.where(moved, end, start)
        return k + 1, x, skip(start, exact), exact, change, violation

    def going(carry):
        k, _, start, _, _, _ = carry
        return (start < length) & (k < max_iters)

    init = (jnp.int32(0), x0, jnp.int32(0), jnp.int32(0), zero, zero)
    k, x, start, _, change, violation = jax.lax.while_loop(going, body, init)
    return k, x, change, violation, start >= length


def _check_output(y, shape) -> None:
    if isinstance(y, (tuple, list)):
        raise ValueError(f"f returned a {type(y).__name__} of {len(y)} items; ffsolve.solve "
                         "needs f to return one array shaped like x0 (for a recurrence with "
                         "a tuple state use ffsolve.solve_recurrence)")
    if tuple(getattr(y, "shape", ())) != shape:
        raise ValueError(f"f returned shape {tuple(getattr(y, 'shape', ()))}, expected {shape} "
                         "(the shape of x0)")


def not_triangular(method: str, axis: int, violation: float) -> NotTriangularWarning:
    return NotTriangularWarning(
        f"ffsolve.solve({method!r}): f is not triangular along axis {axis}: positions that "
        f"the triangular argument had made final changed again (by up to "
        f"{violation:.3g}), so the result is not the sequential one. Check "
        f"the axis (a (batch, T) array needs axis=1) and that output t reads only inputs < t "
        f"(a causal shift).")
