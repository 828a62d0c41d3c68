"""``ffsolve.solve_recurrence``: Markov recurrences s_t = step(s_{t−1}, u_t) solved in parallel.

The trajectory s_1..s_T is the unique solution of the T equations s_t − step(s_{t−1}, u_t) = 0, a
lower-triangular (block-bidiagonal) system. Every method iterates on the whole trajectory x at
once. With ``prev(x) = (s_0, x_1, ..., x_{T−1})`` and ``f = step(prev(x), u)`` (one batched call)
and the residual ``r = f − x``, one iteration is

* ``jacobi``: x ← f (one pass of ``step``);
* ``newton`` (DEER): linearise every step around the current trajectory, J_t = ∂step/∂s at
  (x_{t−1}, u_t), and solve the linear recurrence δ_t = J_t δ_{t−1} + r_t (δ_0 = 0) for all t by
  a parallel prefix scan over affine maps (:mod:`ffsolve.recurrence.scan`); x ← x + δ;
* ``quasi_newton`` (quasi-DEER): the same with diag(J_t), an elementwise scan;
* ``damped_newton`` (ELK-style Levenberg–Marquardt): δ is the mean of a Kalman filter whose
  dynamics are the linearised ones with unit noise and whose observation at every t is the current
  iterate (δ_t = 0) with noise variance σ² = ``damping``: each step is pulled toward the current
  iterate with gain 1/(1 + σ²); σ² → ∞ is ``newton``. The filter runs as a parallel scan
  (Särkkä & García-Fernández 2021), dense H×H. (ELK itself uses the smoother; the filter is
  cheaper, keeps causality, and is the same Levenberg–Marquardt trade-off at every t given the
  past.)

Guarantees, for every method:

* **at most T parallel steps.** Call positions < e of x *exact* when they hold the sequential
  values bit for bit. Then ``f`` is exact at positions <= e, and every iteration writes ``f``
  there (a Newton step would add a rounding-level δ to an exact value), so the exact prefix grows
  by at least one per iteration; after T iterations x is the sequential result and the solver
  stops with ``converged=True``.
* **no non-finite iterate**: where a Newton-type update is NaN or infinite (a diverging
  linearisation), that entry takes the Jacobi value ``f`` instead (counted in
  :attr:`RecurrenceResult.fallbacks`).
* **stopping**: stop once max |x_new − x| <= tol. ``tol = 0`` means exact: Newton-type
  iterations run while their change keeps shrinking (until the floating-point floor), then plain
  Jacobi *polishing* steps run until the change is exactly zero. A Jacobi step that changes
  nothing means x = step(prev(x), u) in floating point, whose only solution is the sequential
  loop's result, bit for bit, provided ``step`` gives each time position the same bits whether
  it is called on one position or on T (true for the built-in cells: see
  :func:`ffsolve.recurrence.cells.linear`). Polishing steps count as iterations.

Counting: ``iterations`` are parallel steps (one batched ``step`` call, plus for the Newton
types one Jacobian and one scan). ``network_evaluations`` is work in full passes of ``step``
over the sequence: ``sequential`` computes each position once (1.0); a Jacobi iteration is 1;
a Newton-type iteration is 1 plus its Jacobian's cost: forward-mode autodiff builds an H×H
Jacobian from H Jacobian-vector products, each about one pass, so H (also for the diagonal,
which has no cheaper general route); the built-in cells' analytic Jacobians declare their cost
(``Cell.full_cost``, ``Cell.diagonal_cost``). The scans are not evaluations of ``step`` and are
not counted; their cost shows in wall time.

Which Jacobian is faster: in PyTorch the built-in cells' analytic ones; in JAX it is close.
Measured with ``benchmarks/recurrence_benchmark.py --jacobians`` (random GRU, batch 16, tol 1e-5,
one process, interleaved repeats, one compute thread on a shared 2-core CPU, so ratios only): at
T = 1,000, H = 8 PyTorch's ``newton`` took 89 ms with the analytic Jacobian against 273 ms with
``vmap(jacfwd)``, ``quasi_newton`` 60 ms against 555 ms (the diagonal by autodiff needs the whole
Jacobian); JAX's ``newton`` 57 against 76 ms, ``quasi_newton`` 125 against 114 ms (XLA compiles the
forward-mode Jacobian well).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffsolve.recurrence import scan as scans
from ffsolve.solvers.core import SolveResult, SolveTrace

Array = Any

METHODS = ("sequential", "jacobi", "newton", "quasi_newton", "damped_newton")
NEWTON_TYPES = ("newton", "quasi_newton", "damped_newton")
DEFAULT_DAMPING = 100.0
# Iterates are kept on the host for the trace only while they hold at most this many numbers.
TRACE_ITERATES_LIMIT = 20_000_000


def available_recurrence_methods() -> list[str]:
    """The method names :func:`solve_recurrence` accepts."""
    return list(METHODS)


@dataclass
class RecurrenceTrace(SolveTrace):
    """:class:`ffsolve.SolveTrace` plus max-abs versions of its norms.

    ``change[k−1]``/``max_change[k−1]``: L2 / max-abs of x_k − x_{k−1}; ``error[k]``/
    ``max_error[k]``: of x_k − x_final, k = 0 (the start, zeros) .. iterations. ``iterates`` is
    empty (shape (0,)) when keeping every iterate would exceed ``TRACE_ITERATES_LIMIT`` numbers.
    """

    max_change: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_error: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class RecurrenceResult(SolveResult):
    """:class:`ffsolve.SolveResult` with the recurrence solver's own counts.

    Attributes (beyond SolveResult's; ``x`` is s_1..s_T, ``(T, *batch, H)``):
        newton_iterations: iterations that took a Newton-type step.
        polish_iterations: Jacobi iterations after the Newton-type phase (tol = 0 polishing, or
            after the change stopped shrinking).
        fallbacks: iterations in which some entry of a Newton-type update was non-finite and took
            the Jacobi value instead.
        damping: σ² for ``damped_newton``, else ``None``.
    """

    newton_iterations: int = 0
    polish_iterations: int = 0
    fallbacks: int = 0
    damping: float | None = None


# --------------------------------------------------------------------------------- frameworks


class _TorchOps:
    framework = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def prev(self, s0, x):
        return self.torch.cat([s0[None], x[:-1]], 0)

    def scan(self, combine, elems):
        return scans.torch_scan(combine, elems)

    def inv(self, m):
        return self.torch.linalg.inv(m)

    def eye(self, like):
        return self.torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)

    def where(self, c, a, b):
        return self.torch.where(c, a, b)

    def isfinite(self, a):
        return self.torch.isfinite(a)

    def max_abs(self, a):
        return a.abs().max()

    def any_false(self, c):
        return ~c.all()

    def time_mask(self, x, e):
        t = self.torch.arange(x.shape[0], device=x.device)
        return (t <= e).reshape((-1,) + (1,) * (x.ndim - 1))

    def zeros_like(self, a):
        return self.torch.zeros_like(a)

    def broadcast_to(self, a, shape):
        return a.expand(shape)


class _JaxOps:
    framework = "jax"

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def prev(self, s0, x):
        return self.jnp.concatenate([s0[None], x[:-1]], 0)

    def scan(self, combine, elems):
        return self.jax.lax.associative_scan(combine, tuple(elems))

    def scan_compact(self, combine, elems, identity):
        """Hillis–Steele in a ``fori_loop``: ⌈log₂T⌉ levels, T·log T combines, but the combine
        is compiled once (``associative_scan`` unrolls about 2⌈log₂T⌉ copies of it, which for the
        Kalman combine took XLA 5–14 s to compile here)."""
        jnp, lax = self.jnp, self.jax.lax
        length = elems[0].shape[0]
        levels = max(0, math.ceil(math.log2(length))) if length > 1 else 0
        t = jnp.arange(length)

        def level(k, xs):
            d = jnp.left_shift(1, k)
            keep = t >= d
            earlier = tuple(
                jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.roll(x, d, axis=0), i)
                for x, i in zip(xs, identity))
            return combine(earlier, xs)

        return lax.fori_loop(0, levels, level, tuple(elems))

    def inv(self, m):
        return self.jnp.linalg.inv(m)

    def eye(self, like):
        return self.jnp.eye(like.shape[-1], dtype=like.dtype)

    def where(self, c, a, b):
        return self.jnp.where(c, a, b)

    def isfinite(self, a):
        return self.jnp.isfinite(a)

    def max_abs(self, a):
        return self.jnp.max(self.jnp.abs(a))

    def any_false(self, c):
        return ~self.jnp.all(c)

    def time_mask(self, x, e):
        t = self.jnp.arange(x.shape[0])
        return (t <= e).reshape((-1,) + (1,) * (x.ndim - 1))

    def zeros_like(self, a):
        return self.jnp.zeros_like(a)

    def broadcast_to(self, a, shape):
        return self.jnp.broadcast_to(a, shape)


@functools.cache
def _ops(framework: str):
    return _TorchOps() if framework == "torch" else _JaxOps()


def _framework_of(a) -> str | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(a, jax.Array):
        return "jax"
    return None


# ---------------------------------------------------------------------------- one iteration


def _iteration(o, step, jac, kind, s0, u, x, e, gain, kappa):
    """One parallel step of ``kind`` from iterate ``x``; returns (x_new, change, fell_back)."""
    prev = o.prev(s0, x)
    f = step(prev, u)
    if kind == "jacobi":
        return f, o.max_abs(f - x), False
    r = f - x
    if kind == "quasi_newton":
        delta = o.scan(scans.affine_diagonal, (jac(prev, u), r))[1]
    elif kind == "newton":
        delta = o.scan(scans.affine_full, (jac(prev, u), r))[1]
    else:  # damped_newton: the parallel Kalman filter's elements (scan module docstring)
        a = jac(prev, u)
        first = o.time_mask(r, 0)
        zero = o.zeros_like(a)
        a_t = a.mT
        eye = o.eye(a)
        elems = (
            o.where(first[..., None], zero, gain * a),
            gain * r,
            o.broadcast_to(gain * eye, a.shape),
            o.where(first, o.zeros_like(r), -kappa * (a_t @ r[..., None])[..., 0]),
            o.where(first[..., None], zero, kappa * (a_t @ a)),
        )
        combine = scans.kalman_combine(o.inv, o.eye)
        if o.framework == "jax":
            z_m, z_v = o.zeros_like(a), o.zeros_like(r)
            identity = (o.broadcast_to(eye, a.shape), z_v, z_m, z_v, z_m)
            delta = o.scan_compact(combine, elems, identity)[1]
        else:
            delta = o.scan(combine, elems)[1]
    x_new = x + delta
    finite = o.isfinite(x_new)
    fell_back = o.any_false(finite)
    x_new = o.where(finite, x_new, f)
    # The exact prefix: f is exact at positions <= e, so those take f's bits.
    x_new = o.where(o.time_mask(x_new, e), f, x_new)
    return x_new, o.max_abs(x_new - x), fell_back


@functools.cache
def _jax_iteration(step, jac, kind):
    import jax

    o = _ops("jax")
    return jax.jit(functools.partial(_iteration, o, step, jac, kind))


@functools.cache
def _jax_sequential(step):
    import jax

    def run(s0, u):
        def body(s, u_t):  # s: (1, *batch, H), u_t: (1, *batch, D): the shapes of a T = 1 call
            s_next = step(s, u_t)
            return s_next, s_next[0]

        return jax.lax.scan(body, s0[None], u[:, None])[1]

    return jax.jit(run)


def _torch_sequential(step, s0, u):
    import torch

    x = torch.empty(u.shape[:-1] + s0.shape[-1:], dtype=s0.dtype, device=s0.device)
    s = s0[None]
    for t in range(u.shape[0]):
        s = step(s, u[t:t + 1])
        x[t] = s[0]
    return x


# ------------------------------------------------------------------------------- Jacobians


@functools.cache
def _autodiff(framework: str, step, which: str):
    """``vmap(jacfwd(step))`` over every leading position; ``which`` = full or diagonal."""
    if framework == "torch":
        import torch

        per_item = torch.func.vmap(torch.func.jacfwd(step, argnums=0))
    else:
        import jax

        per_item = jax.vmap(jax.jacfwd(step, argnums=0))

    def full(s, u):
        h, d = s.shape[-1], u.shape[-1]
        jac = per_item(s.reshape(-1, h), u.reshape(-1, d))
        return jac.reshape(tuple(s.shape[:-1]) + (h, h))

    if which == "full":
        return full
    return _diagonal_of(full)


@functools.cache
def _diagonal_of(full):
    """The diagonal of a full-Jacobian callable (one function per ``full``, so JAX caches)."""

    def diagonal(s, u):
        jac = full(s, u)
        if _framework_of(jac) == "torch":
            return jac.diagonal(0, -2, -1)
        import jax.numpy as jnp

        return jnp.diagonal(jac, 0, -2, -1)

    return diagonal


def _resolve_jacobian(jacobian, step, which: str, framework: str, hidden: int):
    """(callable, cost in passes of step) for ``which`` in {"full", "diagonal"}."""
    if jacobian is None or (isinstance(jacobian, str) and jacobian == "autodiff"):
        return _autodiff(framework, step, which), float(hidden)
    if isinstance(jacobian, str):
        raise ValueError(f"jacobian must be None, 'autodiff', a Cell, a mapping with 'full'/"  # noqa: TRY004
                         f"'diagonal', or a callable; got the string {jacobian!r}")
    if isinstance(jacobian, Mapping):
        unknown = sorted(set(jacobian) - {"full", "diagonal", "full_cost", "diagonal_cost"})
        if unknown:
            raise ValueError(f"jacobian mapping has unknown keys {unknown}; expected 'full', "
                             "'diagonal' (callables) and optional 'full_cost', 'diagonal_cost'")
        get = jacobian.get
    elif hasattr(jacobian, "full") or hasattr(jacobian, "diagonal") or hasattr(jacobian, "jacobian"):
        def get(key, default=None):
            if key == "full":
                return getattr(jacobian, "full", None) or getattr(jacobian, "jacobian", default)
            return getattr(jacobian, key, default)
    elif callable(jacobian):
        def get(key, default=None):
            return jacobian if key == "full" else default
    else:
        raise ValueError(f"jacobian must be None, 'autodiff', a Cell, a mapping or a callable, "
                         f"got {type(jacobian).__name__}")
    fn = get(which)
    if fn is not None:
        return fn, float(get(f"{which}_cost", 1.0))
    if which == "diagonal" and get("full") is not None:
        return _diagonal_of(get("full")), float(get("full_cost", 1.0))
    raise ValueError(f"the given jacobian provides no {which!r} Jacobian (and no 'full' to take "
                     "its diagonal from)")


# ----------------------------------------------------------------------------------- checks


def _check(step, s0, inputs, method, tol, max_iters, damping):
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    framework = _framework_of(s0)
    if framework is None:
        raise ValueError(f"s0 must be a torch.Tensor or a jax.Array, got {type(s0).__name__}")
    if _framework_of(inputs) != framework:
        raise ValueError(f"inputs must be the same kind of array as s0 ({framework}), got "
                         f"{type(inputs).__name__}")
    if s0.ndim < 1:
        raise ValueError("s0 must have shape (*batch, H) with at least the state axis H")
    if inputs.ndim != s0.ndim + 1 or tuple(inputs.shape[1:-1]) != tuple(s0.shape[:-1]):
        raise ValueError(
            f"inputs must have shape (T, *batch, D) with batch {tuple(s0.shape[:-1])} from s0 "
            f"{tuple(s0.shape)}; got {tuple(inputs.shape)}")
    if inputs.shape[0] < 1:
        raise ValueError("inputs has no time steps (T = 0)")
    if inputs.dtype != s0.dtype:
        raise ValueError(f"inputs dtype {inputs.dtype} differs from s0 dtype {s0.dtype}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) \
            or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if max_iters is not None and (isinstance(max_iters, bool)
                                  or not isinstance(max_iters, numbers.Integral) or max_iters < 1):
        raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
    if damping is not None:
        if method != "damped_newton":
            raise ValueError(f"damping is only used by 'damped_newton', not {method!r}")
        if isinstance(damping, bool) or not isinstance(damping, numbers.Real) \
                or not damping > 0 or math.isnan(damping):
            raise ValueError(f"damping (σ²) must be a number > 0 (inf means newton), got "
                             f"{damping!r}")
    return framework


# ------------------------------------------------------------------------------------ solve


def solve_recurrence(step: Callable, s0: Array, inputs: Array, *, method: str = "sequential",
                     tol: float = 0.0, max_iters: int | None = None, jacobian=None,
                     damping: float | None = None, trace: bool = False) -> RecurrenceResult:
    """The states s_1..s_T of s_t = step(s_{t−1}, u_t), by the named method.

    Args:
        step: ``step(s_prev (..., H), u (..., D)) -> (..., H)``, broadcasting over leading axes.
            The solvers call it with a leading time axis: ``(1, *batch, ·)`` in the sequential
            loop, ``(T, *batch, ·)`` otherwise (see the module docstring on bitwise results).
        s0: the initial state ``(*batch, H)``, a ``torch.Tensor`` or ``jax.Array``.
        inputs: ``(T, *batch, D)``, the same array type and dtype.
        method: one of :func:`available_recurrence_methods`.
        tol: stop once max |x_new − x| <= tol; 0 means exact (the sequential result).
        max_iters: the most parallel steps (default and at most useful: T).
        jacobian: for the Newton types. ``None``/``"autodiff"``: forward mode batched over the
            sequence; a :class:`~ffsolve.recurrence.cells.Cell` (or any object with ``full``/
            ``jacobian`` and ``diagonal``), a mapping ``{"full": fn, "diagonal": fn}``, or a
            callable giving the full Jacobian.
        damping: σ² of ``damped_newton`` (default :data:`DEFAULT_DAMPING` = 100, the value the
            ELK authors' notebook uses for the diagonal variant: a step's first position is
            pulled back by 1/(1 + σ²) ≈ 1 %; smaller damps more, ∞ is ``newton``).
        trace: record a :class:`RecurrenceTrace` (runs the solve twice: once to learn the final
            iterate, once recording distances to it; for plots, not for timing).

    Returns:
        A :class:`RecurrenceResult`; ``x`` has shape ``(T, *batch, H)`` and the type, dtype and
        device of ``s0``; ``iterations <= T`` always.
    """
    framework = _check(step, s0, inputs, method, tol, max_iters, damping)
    step = getattr(step, "step", step)  # a Cell: its step function (one JAX compilation for both)
    length = int(inputs.shape[0])
    hidden = int(s0.shape[-1])
    max_iters = length if max_iters is None else int(max_iters)
    if method == "damped_newton" and damping is None:
        damping = DEFAULT_DAMPING
    if framework == "jax" and math.prod(s0.shape[:-1]) == 1:
        return _unpad(solve_recurrence(step, *_pad(s0, inputs), method=method, tol=tol,
                                       max_iters=max_iters, jacobian=jacobian, damping=damping,
                                       trace=trace), s0.shape)
    if trace:
        final = _solve(framework, step, s0, inputs, method, float(tol), max_iters, jacobian,
                       damping, length, hidden, None)
        return _solve(framework, step, s0, inputs, method, float(tol), max_iters, jacobian,
                      damping, length, hidden, _Recorder(final.x, length))
    return _solve(framework, step, s0, inputs, method, float(tol), max_iters, jacobian, damping,
                  length, hidden, None)


def _pad(s0, inputs):
    """A JAX batch of one, as a batch of two copies. XLA compiles a product with a batch of one
    inside the loop's ``lax.scan`` differently from the same product batched over T (measured:
    the last bit differs), so ``tol=0`` would stop at the batched map's own fixed point, 1e-7 off
    the loop. With two rows both paths use the same kernels (bitwise, tested)."""
    import jax.numpy as jnp

    h, d = s0.shape[-1], inputs.shape[-1]
    return (jnp.broadcast_to(s0.reshape(1, h), (2, h)),
            jnp.broadcast_to(inputs.reshape(-1, 1, d), (inputs.shape[0], 2, d)))


def _unpad(res, shape):
    """The first copy, in the caller's shape; trace norms of one copy (L2 / √2, max unchanged)."""
    length = res.x.shape[0]
    res.x = res.x[:, :1].reshape((length,) + tuple(shape))
    if res.trace is not None:
        res.trace.change = res.trace.change / math.sqrt(2)
        res.trace.error = res.trace.error / math.sqrt(2)
        if res.trace.iterates.size:
            its = res.trace.iterates
            res.trace.iterates = its[:, :, :1].reshape(its.shape[:2] + tuple(shape))
    return res


def _context(framework):
    if framework == "torch":
        import torch

        return torch.no_grad()
    import contextlib

    return contextlib.nullcontext()


def _solve(framework, step, s0, inputs, method, tol, max_iters, jacobian, damping, length,
           hidden, recorder):
    o = _ops(framework)
    common = {"method": method, "block_size": None, "tol": tol, "sequence_length": length,
              "damping": damping}
    with _context(framework):
        # One position first, so that a step of the wrong shape fails here with a clear message.
        _check_output(step(s0[None], inputs[:1]), inputs[:1], s0)
        if method == "sequential":
            if framework == "torch":
                x = _torch_sequential(step, s0, inputs)
            else:
                x = _jax_sequential(step)(s0, inputs)
            _check_output(x, inputs, s0)
            if recorder is not None:
                recorder.sequential(x)
            return RecurrenceResult(x=x, iterations=length, converged=True,
                                    network_evaluations=1.0, trace=_trace(recorder), **common)

        jac, jac_cost = None, 0.0
        if method in NEWTON_TYPES:
            which = "diagonal" if method == "quasi_newton" else "full"
            jac, jac_cost = _resolve_jacobian(jacobian, step, which, framework, hidden)
        if method == "damped_newton":
            # Observation gain κ = 1/(1 + σ²) with unit dynamics noise; g = 1 − κ.
            gain, kappa = (1.0, 0.0) if math.isinf(damping) else (
                damping / (1.0 + damping), 1.0 / (1.0 + damping))
        else:
            gain, kappa = 1.0, 0.0

        def run(kind, x, e):
            if framework == "jax":
                return _jax_iteration(step, jac if kind != "jacobi" else None, kind)(
                    s0, inputs, x, e, gain, kappa)
            return _iteration(o, step, jac, kind, s0, inputs, x, e, gain, kappa)

        x = o.zeros_like(s0[None] * o.zeros_like(inputs[..., :1]))  # (T, *batch, H)
        if recorder is not None:
            recorder.start(x)
        kind = method if method in NEWTON_TYPES else "jacobi"
        iterations = newton_its = polish = fallbacks = 0
        work, exact = 0.0, 0
        previous_change = math.inf
        converged = False
        while iterations < max_iters:
            x_new, change, fell_back = run(kind, x, exact)
            change = float(change)
            iterations += 1
            exact = min(exact + 1, length)
            if kind == "jacobi":
                work += 1.0
                polish += method in NEWTON_TYPES
            else:
                work += 1.0 + jac_cost
                newton_its += 1
                fallbacks += bool(fell_back)
            x = x_new
            if recorder is not None:
                recorder.record(x)
            if exact >= length:
                converged = True
                break
            if (kind == "jacobi" or tol > 0) and change <= tol:
                converged = True
                break
            if kind != "jacobi" and (change == 0 or change >= previous_change):
                # The Newton-type change stopped shrinking: the floating-point floor (or a
                # linearisation that no longer helps). Jacobi steps from here: they stop when a
                # step changes nothing, which at tol = 0 is the sequential result.
                kind = "jacobi"
            previous_change = change
        return RecurrenceResult(
            x=x, iterations=iterations, converged=converged, network_evaluations=work,
            trace=_trace(recorder), newton_iterations=newton_its, polish_iterations=polish,
            fallbacks=fallbacks, **common)


def _check_output(x, inputs, s0):
    expected = tuple(inputs.shape[:-1]) + (s0.shape[-1],)
    if tuple(x.shape) != expected:
        raise ValueError(f"step returned states of shape {tuple(x.shape)[1:]} per time step for "
                         f"s0 {tuple(s0.shape)}; expected {expected[1:]}")
    if x.dtype != s0.dtype:
        raise ValueError(f"step returned dtype {x.dtype}, s0 has {s0.dtype}")


# ----------------------------------------------------------------------------------- traces


def _host(a) -> np.ndarray:
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


class _Recorder:
    def __init__(self, final, length):
        self.final = _host(final).astype(np.float64)
        self.keep = self.final.size * (length + 1) <= TRACE_ITERATES_LIMIT
        self.change, self.max_change, self.error, self.max_error = [], [], [], []
        self.iterates = []
        self.last = None

    def start(self, x):
        self._add(_host(x))

    def record(self, x):
        self._add(_host(x))

    def _add(self, x):
        x64 = x.astype(np.float64)
        if self.last is not None:
            d = x64 - self.last
            self.change.append(float(np.sqrt(np.sum(d * d))))
            self.max_change.append(float(np.max(np.abs(d))))
        err = x64 - self.final
        self.error.append(float(np.sqrt(np.sum(err * err))))
        self.max_error.append(float(np.max(np.abs(err))))
        if self.keep:
            self.iterates.append(x.copy())
        self.last = x64

    def sequential(self, x):
        """Step k of the loop fills position k (the start: zeros), recorded by norms only."""
        final = self.final
        sq = np.sum(final.reshape(final.shape[0], -1) ** 2, axis=1)
        mx = np.max(np.abs(final.reshape(final.shape[0], -1)), axis=1)
        tail_sq = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])
        tail_mx = np.concatenate([np.maximum.accumulate(mx[::-1])[::-1], [0.0]])
        self.error, self.max_error = list(np.sqrt(tail_sq)), list(tail_mx)
        self.change, self.max_change = list(np.sqrt(sq)), list(mx)
        self.keep = False


def _trace(recorder) -> RecurrenceTrace | None:
    if recorder is None:
        return None
    iterates = np.stack(recorder.iterates) if recorder.keep and recorder.iterates else np.zeros(0)
    return RecurrenceTrace(change=np.asarray(recorder.change), error=np.asarray(recorder.error),
                           iterates=iterates, max_change=np.asarray(recorder.max_change),
                           max_error=np.asarray(recorder.max_error))
