"""``ffsolve.solve``: the one entry point and the registry of methods (its result record,
:class:`SolveResult`, lives in :mod:`ffsolve.solvers.result` and is importable from here too).

A *triangular map* ``f`` along ``axis`` is a function whose output at position t depends only on
input positions < t. Its unique fixed point x* = f(x*) is the feedforward result: what you get by
computing position 0, then 1, then 2, ... in order. Every method here finds that fixed point; they
differ in how many positions each call of ``f`` is allowed to update.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any, Callable, Optional

import numpy as np

from ffsolve.deadline import MIN_STEPS, Deadline, as_deadline, last_bits, progress
from ffsolve.solvers import arrays
from ffsolve.solvers.result import (  # noqa: F401  (importable from here, as before)
    STOPPED_BY,
    NotBitwiseWarning,
    NotTriangularWarning,
    SolveResult,
    SolveTrace,
    _register_pytree,
)

Array = Any
TriangularMap = Callable[[Array], Array]


Solver = Callable[..., SolveResult]
_SOLVERS: dict[str, Solver] = {}
_USES_BLOCKS: set[str] = set()


def register_solver(name: str, fn: Solver, *, uses_blocks: bool = False) -> None:
    """Add a method under ``name``.

    ``fn(f, x0, *, block_size, tol, max_iters, axis, tracker)`` must return a
    :class:`SolveResult`; arguments arrive already validated (see :func:`solve`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"solver name must be a non-empty string, got {name!r}")
    if name in _SOLVERS:
        raise ValueError(f"a solver named {name!r} is already registered")
    _SOLVERS[name] = fn
    if uses_blocks:
        _USES_BLOCKS.add(name)


def get_solver(name: str) -> Solver:
    """The method registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return _SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"method must be one of {sorted(_SOLVERS)}, got {name!r}"
        ) from None


def uses_blocks(name: str) -> bool:
    """Whether the registered method ``name`` takes a ``block_size`` (``gs_jacobi``,
    ``jacobi_gs``, and any registered with ``uses_blocks=True``); False for any other name,
    an experiment's own run names included."""
    return name in _USES_BLOCKS


def available_methods() -> list[str]:
    return sorted(_SOLVERS)


def solve(
    f: TriangularMap,
    x0: Array,
    method: str = "jacobi",
    block_size: Optional[int] = None,
    tol: float = 0.0,
    max_iters: Optional[int] = None,
    axis: int = 0,
    *,
    trace: bool = False,
    trace_batch_axis: Optional[int] = None,
    deadline: Optional[float | Deadline] = None,
    params=None,
    backward: str = "sequential",
    compiled: Optional[bool] = None,
) -> SolveResult:
    """Find the fixed point x = f(x) of a triangular map ``f`` by the named method.

    Args:
        f: triangular map along ``axis``: output position t depends only on input positions < t.
            Called with arrays shaped like ``x0``; must return the same shape.
        x0: initial guess (NumPy, PyTorch or JAX array); its length along ``axis`` is T. It is
            never modified.
        method: ``"sequential"`` (one position per call, T calls: the whole map each call, or
            only position t where ``f`` has a bitwise window, :func:`ffsolve.windowed`; the
            compiled driver always calls the whole map), ``"jacobi"`` (every
            position per call), ``"gs_jacobi"`` (blocks in order, Jacobi inside the active block)
            or ``"jacobi_gs"`` (all blocks at once, one position of each block per call), or
            ``"auto"``: the fastest of them for this problem on this machine, found by timing on
            the first call and kept (:mod:`ffsolve.autotune`; its options, such as your own
            sequential path as a candidate, through ``ffsolve.autotune.solve_auto``).
        block_size: positions per block, any positive integer (the last block may be shorter).
            Only for ``gs_jacobi`` and ``jacobi_gs``; default ``ceil(sqrt(T))``.
        tol: stop once max |x_new − x_old| <= tol over the positions being updated. ``0`` means
            exact: the result then equals ``sequential``'s bit for bit.
        max_iters: the most calls of ``f`` to make (default T). Stopping there early gives
            ``converged=False``.
        axis: the axis of ``x0`` that holds the T positions.
        trace: record a :class:`SolveTrace` (keeps every iterate on the host: for plots, not for
            timing).
        trace_batch_axis: with ``trace``, report norms per item along this axis of ``x0``.
        deadline: a ``time.perf_counter()`` value, or an :class:`ffsolve.Deadline` (which may
            also stop a run projected to lose, from its settled prefix); the method stops after
            the call of ``f`` that passes it (``stopped_by="deadline"``, ``converged=False``).
        params: PyTorch only: the tensors ``f`` closes over whose gradients you want (any
            iterable of tensors: ``params=[W, b]``, ``params=model.parameters()``). Default: the
            parameters of an ``nn.Module`` f, else none. An f that reads other tensors requiring
            grad is refused with a message (their gradients would be lost), never run.
        backward: how the backward pass solves the adjoint system λ = g + J_xᵀ λ
            (g = ∂L/∂x*, J_x = ∂f/∂x at x*, strictly triangular): ``"sequential"`` (default;
            backward substitution, the reversed sequential sweep: T − 1 vector–Jacobian
            products of f, one position's cotangent each) or ``"jacobi"`` (Jacobi iteration on
            the adjoint system, one product for every position at once per iteration, until an
            iteration changes nothing: exact, at most T − 1 iterations). Then one
            vector–Jacobian product of f at x* gives the parameters' gradients. See
            :mod:`ffsolve.solvers.grad` (:func:`ffsolve.available_backwards`).
        compiled: JAX only: which driver runs the method. ``None`` (default): the compiled
            driver (one ``lax.while_loop``, see "JAX: jit and vmap" below) exactly where JAX
            traces the solve, the Python driver otherwise; ``True``: the compiled driver on
            concrete arrays too (no ``trace`` or ``deadline``); ``False``: the Python driver
            (refused under a JAX transformation).

    "Exact" here means: the result equals ``sequential``'s, the map called on the whole array
    once per position, bit for bit (or its bitwise window at that position, whose declaration
    ``sequential`` checks with one call of the map on its result). Every method checks the triangular argument as it goes:
    a position it already knows final must not change again; if one does, ``f`` is not
    triangular along ``axis`` (a forgotten causal shift, the wrong axis), and the result says so
    (``causality_violation`` > 0, ``converged=False``, a :class:`NotTriangularWarning`).

    Gradients (PyTorch): when grad mode is on and a parameter (or ``x0``) requires grad, ``x``
    is attached to autograd (a ``torch.autograd.Function``) by the implicit-function argument:
    the forward solve records no graph, whatever the method; the backward solves the adjoint
    system by ``backward`` at the returned x. At ``tol=0`` these are the exact gradients of the
    fixed point (with ``"sequential"``, the adjoint λ is that of autograd through the plain
    sequential evaluation bit for bit; the parameters' gradients are within rounding, their T
    per-position parts summed in another order). ``x0`` gets a zero gradient: the fixed point
    does not depend on the initial guess. Not twice differentiable; ``method="auto"``
    differentiates with the defaults.

    Gradients (JAX): under an eager ``jax.grad``/``jax.vjp`` the solver is a ``jax.custom_vjp``
    of ``x0`` (zero cotangent) and the floating-point arrays ``f`` closes over (found by
    tracing f: no ``params`` needed), with the same ``backward`` choices compiled into one
    backward program; equal to ``jax.grad`` through the sequential evaluation within rounding.
    The same holds under ``jax.jit`` and ``jax.vmap`` (around the solve or its gradient), where
    the forward solve is the compiled driver; a second derivative raises a ``TypeError``. NumPy:
    no gradients.

    JAX: jit and vmap. On JAX arrays each method is also one compiled program
    (:mod:`ffsolve.solvers.compiled`: a ``lax.while_loop``; ``sequential`` a ``lax.fori_loop``)
    with the Python driver's stopping rules, step for step: a step that changed nothing, the
    change <= ``tol`` > 0, the count bound (never more than T calls), ``max_iters``. So a solve
    runs inside your own jitted function, ``jax.jit(lambda x0: ffsolve.solve(f, x0).x)``, for
    about the cost per step of a hand-written jitted Jacobi loop (``benchmarks/jax_driver.py``
    compares them), and under ``jax.vmap``: each lane stops by its own rules (the loop runs
    until the last lane stops, and a stopped lane keeps its values), so a lane is that lane's
    own solve wherever the vmapped f computes a lane's bits as f does. It runs wherever JAX
    traces the solve: ``x0`` or the arrays ``f`` closes over traced by ``jit`` or ``vmap`` (a
    ``grad`` under them included); ``compiled=True`` asks for it on concrete arrays too
    (jitted, and cached by f's traced program with the weights as arguments, so a changed
    weight is never answered by a stale compile). Its ``x``, ``iterations`` and stop equal the
    Python driver's on ``jax.jit(f)`` bit for bit (at ``tol=0``: the sequential result); an
    ``f`` run op by op (un-jitted) may round differently from the same ``f`` compiled, since
    XLA fuses its operations. Under a transformation the fields the run decides are JAX scalars
    (see :class:`SolveResult`): ``stopped_by`` is a code, ``ffsolve.STOPPED_BY[int(code)]`` its
    name, and the record is a pytree that a jitted function may return whole. A map that is not
    triangular still gives ``causality_violation`` > 0 and ``converged`` False there, but no
    :class:`NotTriangularWarning` (a host callback would cost more than a small solve). What
    needs the host is refused under a transformation with a ``ValueError`` naming it:
    ``trace`` (and ``trace_batch_axis``), ``deadline``, ``method="auto"``, ``compiled=False``,
    and methods added by :func:`register_solver` (they have no compiled driver).

    Returns:
        A :class:`SolveResult`. Whatever the method, ``iterations <= T`` and, with ``tol=0`` and
        enough ``max_iters``, ``converged`` is True and ``x`` is the sequential result; the
        result says what stopped it (``stopped_by``) and its last change (``final_change``).

    Example:
        >>> import numpy as np, ffsolve
        >>> f = lambda x: np.concatenate([[1.0], 0.5 * x[:-1] + 1.0])   # x_t = 0.5 x_{t-1} + 1
        >>> res = ffsolve.solve(f, np.zeros(8), method="jacobi")
        >>> float(res.x[-1]), res.iterations <= 8
        (1.9921875, True)
    """
    if compiled not in (None, True, False):
        raise ValueError(f"compiled must be None, True or False, got {compiled!r}")
    if method == "auto":
        from ffsolve import tuning  # ffsolve.autotune's machinery, below this module

        if compiled is not None:
            raise ValueError("method='auto' takes no compiled: it times the Python driver's "
                             "methods; pass the method it chose (result.method) with compiled=")
        if arrays.is_jax(x0) and _traced_by_jax(f, x0):
            raise ValueError("method='auto' cannot run under jax.jit or jax.vmap: it times the "
                             "methods on the host; choose it outside the transformation (call "
                             "it once on concrete arrays) and pass the method it chose "
                             "(result.method)")
        if trace or trace_batch_axis is not None or deadline is not None:
            raise ValueError("method='auto' takes no trace or deadline (it times the methods "
                             "itself); trace the method it chose (result.method) instead")
        if params is not None or backward != "sequential":
            raise ValueError("method='auto' takes no params or backward: it differentiates with "
                             "backward='sequential' and the parameters of an nn.Module f; for "
                             "others pick the method (result.method) and pass it")
        return tuning.solve_auto(f, x0, solve=solve, get_solver=get_solver, block_size=block_size,
                                 tol=tol, max_iters=max_iters, axis=axis)
    from ffsolve.solvers import grad

    grad.check_backward(backward)
    solver = get_solver(method)
    xp = arrays.namespace(x0)
    if x0.ndim < 1:
        raise ValueError("x0 must have at least one dimension (the positions to solve for)")
    axis = _check_axis(axis, x0.ndim, "axis")
    length = x0.shape[axis]
    if length < 1:
        raise ValueError(f"x0 has no positions along axis {axis} (shape {tuple(x0.shape)})")
    if not callable(f):
        raise ValueError(f"f must be callable, got {type(f).__name__}")
    if method in _USES_BLOCKS:
        block_size = math.isqrt(length - 1) + 1 if block_size is None else block_size
        block_size = _check_positive_int(block_size, "block_size")
    elif block_size is not None:
        raise ValueError(
            f"block_size is only used by {sorted(_USES_BLOCKS)}; method {method!r} takes none"
        )
    tol = _check_tol(tol)
    max_iters = length if max_iters is None else _check_positive_int(max_iters, "max_iters")
    if trace_batch_axis is not None:
        if not trace:
            raise ValueError("trace_batch_axis needs trace=True")
        trace_batch_axis = _check_axis(trace_batch_axis, x0.ndim, "trace_batch_axis")
        if trace_batch_axis == axis:
            raise ValueError("trace_batch_axis must differ from axis")
    torch_x0 = arrays.is_torch(x0)
    if params is not None and not torch_x0:
        raise ValueError(f"params= names the tensors a PyTorch f closes over (PyTorch-only), got "
                         f"{type(x0).__module__.split('.')[0]} arrays")
    jax_x0 = arrays.is_jax(x0)
    if compiled and not jax_x0:
        raise ValueError(f"compiled=True runs the method as one JAX program (lax.while_loop): "
                         f"it needs JAX arrays, got {type(x0).__module__.split('.')[0]} arrays")

    def refuse(under="under jax.jit or jax.vmap"):
        """Options the compiled driver cannot honour: a ValueError naming the first one."""
        from ffsolve.solvers import compiled as compiled_driver

        if compiled is False:
            raise ValueError(f"compiled=False (the Python driver, which steers its iterations "
                             f"from the host) cannot run {under}; leave compiled at None")
        if trace:
            raise ValueError(f"trace=True cannot be used {under}: it keeps every iterate on "
                             f"the host; record the trace from a call on concrete arrays")
        if deadline is not None:
            raise ValueError(f"deadline= cannot be used {under}: the compiled loop does not "
                             f"read the host's clock between steps; use max_iters to bound it")
        if method not in compiled_driver.METHODS:
            raise ValueError(f"method {method!r} has no compiled driver, so it cannot run "
                             f"{under}; the compiled methods are {list(compiled_driver.METHODS)}")

    if compiled:
        refuse("with compiled=True")
    declared = ()
    if torch_x0:
        from ffsolve.recurrence.grad import parameters_of

        declared = parameters_of(f, params)

    def run(f=f, x0=x0) -> SolveResult:
        tracker = Tracker(xp, f, tuple(x0.shape), trace, trace_batch_axis, as_deadline(deadline))
        tracker.axis, tracker.tol, tracker.dtype = axis, tol, x0.dtype
        tracker.declared = declared
        return solver(
            f=tracker,
            x0=x0,
            block_size=block_size,
            tol=tol,
            max_iters=max_iters,
            axis=axis,
            xp=xp,
        )

    if torch_x0 and grad.wants_gradients(x0, declared):
        grad.refuse_undeclared(f, x0, declared)
        res = grad.differentiable_solve(run, f=f, x0=x0, params=declared, backward=backward,
                                        axis=axis)
    elif jax_x0:
        # Traced x0 or traced arrays in f's closure (a jax.grad, jit or vmap), or compiled=True:
        # the custom_vjp path. Its forward solve is the compiled driver where anything is
        # traced (jit, vmap) or compiled=True, else (an eager jax.grad) the Python driver.
        _register_pytree()
        res = None
        if not _is_tracer(x0) and not compiled:
            try:
                res = run()
            except grad.TracedClosure:
                pass
        if res is None:
            from ffsolve.solvers import compiled as compiled_driver

            options = dict(method=method, block_size=block_size, tol=tol, max_iters=max_iters,
                           axis=axis)
            res = grad.jax_differentiable_solve(
                run, f=f, x0=x0, backward=backward, axis=axis, compiled=compiled,
                driver=lambda fn, x: compiled_driver.run(fn, x, **options),
                program_key=tuple(sorted(options.items())), refuse=refuse,
                finish=lambda x, stats: compiled_driver.result(x, stats, length=length,
                                                               **options))
    else:
        res = run()
    if not _is_tracer(res.causality_violation) and res.causality_violation > 0:
        from ffsolve.solvers.compiled import not_triangular

        res.converged = False
        warnings.warn(not_triangular(method, axis, res.causality_violation), stacklevel=2)
    return res



def _is_tracer(x0) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x0, jax.core.Tracer)


def _traced_by_jax(f, x0) -> bool:
    """``x0``, or an array ``f`` closes over, is staged or batched by a JAX transformation
    (jit, vmap; an eager grad's tracers of concrete values do not count): found by tracing f
    once at x0's shape."""
    import jax

    if _staged(x0):
        return True
    try:
        closed = jax.make_jaxpr(f)(jax.ShapeDtypeStruct(tuple(x0.shape), x0.dtype))
    except Exception:  # f cannot be traced: not under a transformation either
        return False
    return any(_staged(c) for c in closed.consts)


def _staged(a) -> bool:
    """A tracer that is not, under its differentiation tracers, a concrete array."""
    while _is_tracer(a):
        if not hasattr(a, "primal") or not hasattr(a, "tangent"):
            return True
        a = a.primal
    return False


class Tracker:
    """Wraps ``f``: counts calls, checks the output shape, and records the trace on request."""

    def __init__(self, xp, f, shape, trace: bool, batch_axis: Optional[int],
                 deadline: Optional[Deadline] = None):
        self.xp, self.f, self.shape = xp, f, shape
        self.deadline = deadline
        self.axis: Optional[int] = None  # set by solve(): the positions' axis, tol and dtype
        self.tol, self.dtype = 0.0, None
        self.changes: list[float] = []  # each call's change, for a projecting deadline
        self.progress = 0.0  # the largest seen (ffsolve.deadline.progress)
        self.calls = 0
        self.violation = 0.0
        self.recording = trace
        self.batch_axis = batch_axis
        self.changes: list = []
        self.iterates: list[np.ndarray] = []
        self.declared: tuple = ()  # PyTorch: the parameters solve() was told f closes over

    def __call__(self, x: Array) -> Array:
        y = self.f(x)
        self.calls += 1
        if self.calls == 1:
            self._check_first(y)
        if tuple(getattr(y, "shape", ())) != self.shape:
            raise ValueError(
                f"f returned shape {tuple(getattr(y, 'shape', ()))}, expected {self.shape} "
                "(the shape of x0)"
            )
        return y

    def _check_first(self, y) -> None:
        if isinstance(y, (tuple, list)):
            raise ValueError(f"f returned a {type(y).__name__} of {len(y)} items; ffsolve.solve "
                             "needs f to return one array shaped like x0 (for a recurrence with "
                             "a tuple state use ffsolve.solve_recurrence)")
        jax = sys.modules.get("jax")
        if jax is not None and isinstance(y, jax.core.Tracer):
            from ffsolve.solvers.grad import TracedClosure

            raise TracedClosure()  # x is concrete: f reads arrays a jax transformation traces
        if getattr(y, "requires_grad", False):
            import torch

            if torch.is_grad_enabled():
                # Only reached when no declared parameter requires grad (else the solve runs
                # inside ffsolve.solvers.grad's autograd.Function, without a graph).
                from ffsolve.recurrence.grad import undeclared_leaves
                from ffsolve.solvers.grad import undeclared_message

                raise RuntimeError(undeclared_message(undeclared_leaves([y], self.declared)
                                                      or [y]))

    def expired(self, settled=None, change: Optional[float] = None) -> bool:
        """The caller's deadline has passed (checked between calls of f). For a deadline that
        projects (:attr:`projects`): ``settled``, the positions known final (or a function that
        computes them, called only when a projection is due), and ``change``, this call's change
        over every position (methods that update them all); projected from
        :data:`~ffsolve.deadline.MIN_STEPS` calls on."""
        if self.deadline is None:
            return False
        if change is not None:
            self.changes.append(float(change))
        length = self.shape[self.axis] if self.axis is not None else None
        if settled is None or not length or self.calls < MIN_STEPS or not self.deadline.due():
            return self.deadline.passed(None)
        settled = settled() if callable(settled) else settled
        floor = self.tol if self.tol > 0 else last_bits(self.dtype, self.changes[0] if self.changes else 0.0)
        changes = self.changes if change is not None else ()
        self.progress = max(self.progress, progress(settled / length, changes, floor))
        return self.deadline.passed(self.progress)

    def window(self, x: Array, start: int, stop: int):
        """``(outputs at positions [start, stop), work in full passes)``: by the map's window
        evaluator when it has one (:func:`ffsolve.windowed`), else by a full call of ``f`` whose
        outputs before ``start``, known final, are checked (:meth:`final`)."""
        axis = self.axis
        length = self.shape[axis]
        index = arrays.index_along(axis, len(self.shape), slice(start, stop))
        window = getattr(self.f, "window", None)
        if window is None:
            y = self(x)
            if start > 0:
                before = arrays.index_along(axis, len(self.shape), slice(0, start))
                self.final(y[before] - x[before], start, axis)
            return y[index], 1.0
        out = window(x, start, stop)
        self.calls += 1
        expected = self.shape[:axis] + (stop - start,) + self.shape[axis + 1:]
        if tuple(getattr(out, "shape", ())) != expected:
            raise ValueError(f"f.window(x, {start}, {stop}) returned shape "
                             f"{tuple(getattr(out, 'shape', ()))}, expected {expected} (x's shape "
                             f"with {stop - start} positions along axis {axis})")
        cost = getattr(self.f, "window_cost", None)
        work = cost(start, stop) if cost is not None else None
        return out, float((stop - start) / length if work is None else work)

    def final(self, diff: Array, final_positions: int, axis: int) -> None:
        """Note the largest change ``diff`` (``f``'s output minus its input, over the whole
        array or a prefix of it) at the first ``final_positions`` positions, which the
        triangular argument says are final."""
        self.violation = max(self.violation, arrays.prefix_max_abs(self.xp, diff, final_positions, axis))

    def start(self, x0: Array) -> None:
        if self.recording:
            self.iterates.append(arrays.to_numpy(x0).copy())

    def record(self, x_new: Array) -> None:
        """Note the iterate after a call (no-op unless a trace was asked for)."""
        if not self.recording:
            return
        new = arrays.to_numpy(x_new).copy()
        self.changes.append(_norm(new - self.iterates[-1], self.batch_axis))
        self.iterates.append(new)

    def result(self, x, *, converged, method, block_size, tol, length, stopped_by=None,
               final_change=None) -> SolveResult:
        trace = None
        if self.recording:
            stacked = np.stack(self.iterates)
            error = np.stack([_norm(it - stacked[-1], self.batch_axis) for it in stacked])
            width = () if self.batch_axis is None else (self.shape[self.batch_axis],)
            change = np.asarray(self.changes, dtype=np.float64).reshape((-1,) + width)
            trace = SolveTrace(change=change, error=error, iterates=stacked)
        return SolveResult(
            x=x,
            iterations=self.calls,
            converged=converged,
            method=method,
            block_size=block_size,
            tol=tol,
            sequence_length=length,
            trace=trace,
            stopped_by=stopped_by,
            final_change=final_change,
            causality_violation=self.violation,
        )


def _norm(a: np.ndarray, batch_axis: Optional[int]):
    a = a.astype(np.float64)
    if batch_axis is None:
        return float(np.sqrt(np.sum(a * a)))
    axes = tuple(i for i in range(a.ndim) if i != batch_axis)
    return np.sqrt(np.sum(a * a, axis=axes))


def _check_axis(axis, ndim: int, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_tol(tol) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return float(tol)
