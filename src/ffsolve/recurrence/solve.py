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
  nothing means x = step(prev(x), u) in floating point for the *batched* step. That is the
  user's loop's result, bit for bit, provided ``step`` gives each row the same bits whether it
  is called on the loop's ``(*batch, H)`` or on all ``(T·B, H)`` rows at once (true for the
  built-in cells in PyTorch: see :func:`ffsolve.recurrence.cells.linear`). Polishing steps count
  as iterations.
* **saying so**: ``sequential`` is the user's loop (``step`` on ``(*batch, H)`` states, one
  time step at a time; in JAX a jitted ``lax.scan``). At ``tol = 0`` a parallel result is probed
  against it (:meth:`_Problem.probe`): ``loop_bitwise`` says whether it is the loop's bits, and a
  :class:`NotBitwiseWarning` names the cause and the remedy when it is not.
  :func:`check_step` compares every position before a solve.

Gradients: the result takes part in PyTorch's autograd (a ``torch.autograd.Function``) and in
an eager ``jax.grad`` (a ``jax.custom_vjp``); the backward pass solves the adjoint recurrence by
``backward="loop"``, ``"jacobi"`` or ``"scan"`` and takes one batched vector–Jacobian product
(:mod:`ffsolve.recurrence.grad`; in PyTorch ``params`` names the tensors a step closes over).

Counting: ``iterations`` are parallel steps (one batched ``step`` call, plus for the Newton
types one Jacobian and one scan). ``network_evaluations`` is work in full passes of ``step``
over the sequence: ``sequential`` computes each position once (1.0); a Jacobi iteration is the
share of the T positions it computes (1 for the first; later ones start at the first position
that moved in the previous one, in JAX at the start of a power-of-two window, see
:meth:`_Problem._jax_programs`; the Newton types' polishing steps in JAX compute all T); a
Newton-type iteration is 1 plus its Jacobian's cost: forward-mode autodiff builds an H×H
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

import contextlib
import dataclasses
import functools
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffsolve.deadline import MIN_STEPS, Deadline, as_deadline, last_bits, progress
from ffsolve.recurrence import scan as scans
from ffsolve.recurrence.jacobians import _row_jacobian
from ffsolve.recurrence.programs import _program, _trace, _Traced
from ffsolve.recurrence.state import StateLayout, describe
from ffsolve.solvers.result import NotBitwiseWarning, SolveResult, SolveTrace

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
        loop_bitwise: at ``tol=0``, whether the result is the user's loop's bit for bit: True for
            ``sequential``; for a parallel method, True when the probe found the loop's bits at
            every probed position, False when it found a difference (then ``loop_note`` says
            why and what to do, and a :class:`NotBitwiseWarning` was issued); ``None`` when not
            checked (``tol > 0``, not converged, or ``check_loop=False``).
        loop_max_diff: the largest difference the probe saw, or ``None``.
        loop_note: the probe's explanation when ``loop_bitwise`` is False.
    """

    newton_iterations: int = 0
    polish_iterations: int = 0
    fallbacks: int = 0
    damping: float | None = None
    loop_bitwise: bool | None = None
    loop_max_diff: float | None = None
    loop_note: str = ""


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

    def time_max_abs(self, a):
        return a.abs().reshape(a.shape[0], -1).amax(1)

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

    def time_max_abs(self, a):
        return self.jnp.max(self.jnp.abs(a).reshape(a.shape[0], -1), axis=1)

    def any_false(self, c):
        return ~self.jnp.all(c)

    def time_mask(self, x, e):
        t = self.jnp.arange(x.shape[0])
        return (t <= e).reshape((-1,) + (1,) * (x.ndim - 1))

    def zeros_like(self, a):
        return self.jnp.zeros_like(a)

    def broadcast_to(self, a, shape):
        return self.jnp.broadcast_to(a, shape)


class _NumpyOps:
    framework = "numpy"

    def prev(self, s0, x):
        return np.concatenate([s0[None], x[:-1]], 0)

    def scan(self, combine, elems):
        return scans.torch_scan(combine, elems)

    def inv(self, m):
        return np.linalg.inv(m)

    def eye(self, like):
        return np.eye(like.shape[-1], dtype=like.dtype)

    def where(self, c, a, b):
        return np.where(c, a, b)

    def isfinite(self, a):
        return np.isfinite(a)

    def max_abs(self, a):
        return np.max(np.abs(a))

    def time_max_abs(self, a):
        return np.max(np.abs(a).reshape(a.shape[0], -1), axis=1)

    def any_false(self, c):
        return not bool(np.all(c))

    def time_mask(self, x, e):
        t = np.arange(x.shape[0])
        return (t <= e).reshape((-1,) + (1,) * (x.ndim - 1))

    def zeros_like(self, a):
        return np.zeros_like(a)

    def broadcast_to(self, a, shape):
        return np.broadcast_to(a, shape)


@functools.cache
def _ops(framework: str):
    return {"torch": _TorchOps, "jax": _JaxOps, "numpy": _NumpyOps}[framework]()


def _framework_of(a) -> str | None:
    import sys

    if isinstance(a, np.ndarray):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(a, jax.Array):
        return "jax"
    return None


def _folded(fn: Callable) -> Callable:
    """``fn`` on rows ``(N, ·)`` seen as a function of ``(T, *batch, ·)`` arrays: every leading
    axis folded into the one batch axis that ``torch.nn`` and ``flax.linen`` cells expect."""

    def call(s, u):
        lead = tuple(s.shape[:-1])
        out = fn(s.reshape(-1, s.shape[-1]), u.reshape(-1, u.shape[-1]))
        return out.reshape(lead + tuple(out.shape[1:]))

    return call


# ---------------------------------------------------------------------------- one iteration


def _iteration(o, step, jac, kind, s0, u, x, e, gain, kappa):
    """One parallel step of ``kind`` from iterate ``x`` (time-major ``(T, *batch, H)``).

    Returns (x_new, change, change per time step, fell_back)."""
    prev = o.prev(s0, x)
    f = step(prev, u)
    if kind == "jacobi":
        per_step = o.time_max_abs(f - x)
        return f, per_step.max(), per_step, False
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
    per_step = o.time_max_abs(x_new - x)
    return x_new, per_step.max(), per_step, fell_back




def _suffix_jacobi(o, step, u, x, start: int):
    """A Jacobi step that computes only time steps ``start`` … T − 1 (those before are final):
    the same (x_new, change, change per time step, fell_back) as :func:`_iteration`'s, with zero
    change before ``start``. The step's rows are the same rows it computes in a full step, so a
    bit-stable step (built-in cells, :func:`~ffsolve.recurrence.cells.linear`) gives the same
    bits."""
    f = step(x[start - 1:-1], u[start:])
    if o.framework == "torch":
        x_new = x.clone()
        x_new[start:] = f
        tail = o.time_max_abs(f - x[start:])
        per_step = o.zeros_like(o.time_max_abs(x))
        per_step[start:] = tail
    else:  # NumPy (whatever array type the step hands back becomes a NumPy array)
        x_new = np.concatenate([np.asarray(x[:start]), np.asarray(f)], 0)
        tail = np.asarray(o.time_max_abs(x_new[start:] - np.asarray(x[start:])))
        per_step = np.concatenate([np.zeros(start, dtype=tail.dtype), tail])
    return x_new, tail.max(), per_step, False


def _window_length(length: int, start: int) -> int:
    """JAX's frontier window: ``length − start`` rounded up to a power of two, at most ``length``
    (a compiled program per window length: at most ⌈log₂ length⌉ + 1 of them)."""
    rest = max(length - start, 1)
    return min(length, 1 << (rest - 1).bit_length())


def _window_jacobi(o, step, s0, u, x, start, window: int):
    """A Jacobi step, traced in JAX, that computes only the last ``window`` time steps
    (static slices) and writes back those from ``start`` on (a traced scalar,
    ``start >= length − window``): the window's steps before ``start`` keep x's bits, so the
    result is :func:`_suffix_jacobi`'s; with ``start = 0`` and ``window = length`` it is the full
    step's. Returns (x_new, change, change per time step, fell_back) with zero change before
    ``start``."""
    jnp = o.jnp
    length = x.shape[0]
    low = length - window
    prev = x[low - 1:length - 1] if low > 0 else o.prev(s0, x)
    f = step(prev, u[low:])
    t = jnp.arange(low, length)
    moving = t >= start
    tail = jnp.where(moving.reshape((-1,) + (1,) * (x.ndim - 1)), f, x[low:])
    per_tail = jnp.where(moving, o.time_max_abs(f - x[low:]), 0)
    if low == 0:
        return tail, per_tail.max(), per_tail, False
    per_step = jnp.concatenate([jnp.zeros(low, per_tail.dtype), per_tail])
    return jnp.concatenate([x[:low], tail], 0), per_tail.max(), per_step, False


_FRONTIER: ContextVar[bool] = ContextVar("ffsolve_recurrence_frontier", default=True)


@contextlib.contextmanager
def frontier(enabled: bool):
    """Within this block, ``solve_recurrence``'s Jacobi steps (PyTorch, NumPy: the Newton types'
    polish too) compute from the first time step that moved on (``True``, the default; JAX: a
    power-of-two window) or every time step, every step (``False``: plain Jacobi, for
    comparisons; the same iterations and bits for a bit-stable step, the full work)."""
    token = _FRONTIER.set(bool(enabled))
    try:
        yield
    finally:
        _FRONTIER.reset(token)


def _first_moving(per_step, tol: float, length: int) -> int:
    """The first time step whose change exceeds ``tol`` (``length`` when none)."""
    host = per_step.cpu() if hasattr(per_step, "cpu") else per_step
    moving = np.flatnonzero(np.asarray(host) > tol)
    return int(moving[0]) if moving.size else length


# ------------------------------------------------------------------- JAX: no stale programs
#
# The user's loop, compiled once per traced step; the programs are cached by the step's jaxpr
# in ffsolve.recurrence.programs (see there why no program is ever stale).


def _jax_loop(flat_step, s0, u):
    """The user's loop in JAX: ``lax.scan`` of ``step`` on ``(*batch, H)`` states, jitted."""
    import jax

    traced = _trace(flat_step, s0, u[0])

    def build():
        def run(consts, s0, u):
            def body(s, u_t):
                s_next = traced.fn(consts, s, u_t)
                return s_next, s_next

            return jax.lax.scan(body, s0, u)[1]

        return jax.jit(run)

    return _program(("loop", traced.key), build)(traced.consts, s0, u)


def _jax_windows(flat_step, prevs, u, starts, window):
    """Short runs of the user's loop (the same ``lax.scan`` of the step as :func:`_jax_loop`),
    one from each ``prevs[i]`` over ``u[starts[i]:starts[i] + window]``, in one compiled program
    (one dispatch, one trace): the probe's view of what the loop computes there."""
    import jax
    import jax.numpy as jnp

    traced = _trace(flat_step, prevs[0], u[0])

    def build():
        def run(consts, prevs, u_windows):
            def body(s, u_t):
                s_next = traced.fn(consts, s, u_t)
                return s_next, s_next

            return jnp.stack([jax.lax.scan(body, p, w)[1] for p, w in zip(prevs, u_windows)])

        return jax.jit(run)

    u_windows = [u[start:start + window] for start in starts]
    return _program(("windows", traced.key, len(starts)), build)(traced.consts, prevs, u_windows)


# ------------------------------------------------------------------------------- Jacobians


def _autodiff(framework: str, step: Callable, which: str) -> Callable:
    """The forward-mode Jacobian of ``step`` at any leading shape ``(..., H) -> (..., H, H)``."""
    return _folded(_row_jacobian(framework, step, which))


def _given_jacobian(jacobian, which: str):
    """(callable or None, cost in passes of step) from a user's ``jacobian`` argument."""
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
        return fn, float(get(f"{which}_cost", 1.0)), False
    if which == "diagonal" and get("full") is not None:
        return get("full"), float(get("full_cost", 1.0)), True
    raise ValueError(f"the given jacobian provides no {which!r} Jacobian (and no 'full' to take "
                     "its diagonal from)")


def _is_autodiff(jacobian) -> bool:
    return jacobian is None or (isinstance(jacobian, str) and jacobian == "autodiff")


# ----------------------------------------------------------------------------------- checks


def _check(step, s0, inputs, method, tol, max_iters, damping, time_axis):
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS) + ['auto']}, got {method!r}")
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    layout = StateLayout(s0)
    framework = _framework_of(layout.leaves(s0)[0])
    if framework is None:
        raise ValueError(f"s0 must be a torch.Tensor, a jax.Array or a numpy.ndarray (or a "
                         f"tuple/list/dict of them), got {describe(s0)}")
    if _framework_of(inputs) != framework:
        raise ValueError(f"inputs must be the same kind of array as s0 ({framework}), got "
                         f"{type(inputs).__name__}")
    if time_axis not in (0, 1) or isinstance(time_axis, bool):
        raise ValueError(f"time_axis must be 0 (inputs (T, *batch, D)) or 1 (batch first, "
                         f"(B, T, ..., D)), got {time_axis!r}")
    batch = layout.batch
    if time_axis == 1:
        if not batch:
            raise ValueError("time_axis=1 (batch first) needs a batched s0 (B, ..., H)")
        expected = "(B, T, ..., D)"
        ok = inputs.ndim == len(batch) + 2 and tuple(inputs.shape[:1]) + tuple(
            inputs.shape[2:-1]) == batch
    else:
        expected = "(T, *batch, D)"
        ok = inputs.ndim == len(batch) + 2 and tuple(inputs.shape[1:-1]) == batch
    if not ok:
        raise ValueError(f"inputs must have shape {expected} with batch {batch} from s0 "
                         f"{describe(s0)}; got {tuple(inputs.shape)}")
    if inputs.shape[time_axis] < 1:
        raise ValueError("inputs has no time steps (T = 0)")
    if inputs.dtype != layout.leaves(s0)[0].dtype:
        raise ValueError(f"inputs dtype {inputs.dtype} differs from s0 dtype "
                         f"{layout.leaves(s0)[0].dtype}")
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
    return framework, layout


def _torch_grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _wants_gradients(framework, layout, problem, s0, inputs, declared) -> bool:
    """Whether the result must carry gradients (PyTorch: grad mode on and s0, inputs or a
    declared parameter requires grad). Refuses, instead of dropping them silently, gradients the
    solver cannot give: tensors requiring grad that the step closes over without declaring them
    (PyTorch). JAX: whether s0, inputs or the arrays the step closes over are traced. Runs the
    loop's first step (a step of the wrong shape or type fails there with a clear message)."""
    if framework != "torch" or not _torch_grad_enabled():
        problem.first_step(s0)
    if framework == "torch":
        import torch

        from ffsolve.recurrence.grad import undeclared_leaves

        if not torch.is_grad_enabled():
            return False
        with torch.enable_grad():  # one step from detached s0 and inputs: what else it reads
            detached = layout.unflat(layout.flat(s0).detach())
            out = problem.first_step(detached, problem.u[0].detach())
        hidden = undeclared_leaves(layout.leaves(out), declared)
        if hidden:
            shapes = ", ".join(str(tuple(a.shape)) for a in hidden[:4])
            raise RuntimeError(
                "solve_recurrence does not propagate gradients yet to tensors the step closes "
                f"over without declaring them: the step reads {len(hidden)} tensor(s) that "
                f"require grad (shapes {shapes}) and are not among its parameters. Name them: "
                "params=[...] (an nn.Module step or a built-in Cell declares its own), or call it "
                "under torch.no_grad() (or detach them) for a forward solve.")
        arrays = layout.leaves(s0) + [inputs] + list(declared)
        return any(a.requires_grad for a in arrays)
    if framework == "jax":
        import jax

        # Traced inputs or weights: the custom_vjp path, which runs under an eager jax.grad and
        # raises a TypeError under jax.jit or jax.vmap.
        return bool(getattr(problem, "traced_closure", False)) or any(
            isinstance(a, jax.core.Tracer) for a in layout.leaves(s0) + [inputs])
    return False


# ------------------------------------------------------------------------------------ solve


def solve_recurrence(step: Callable, s0, inputs: Array, method: str = "jacobi", *,
                     tol: float = 0.0, max_iters: int | None = None, jacobian=None,
                     damping: float | None = None, time_axis: int = 0, trace: bool = False,
                     check_loop: bool = True,
                     deadline: float | Deadline | None = None, params=None,
                     backward: str = "loop") -> RecurrenceResult:
    """The states s_1..s_T of s_t = step(s_{t−1}, u_t), by the named method.

    Args:
        step: ``step(state, u) -> state`` as a user writes it for the loop
            ``for t: s = step(s, u[t])``: called on ``(*batch, H)`` states, one time step at a
            time, by ``sequential``; the parallel methods call it on every time step at once with
            the leading axes folded into one batch axis, ``(T·B, H)``, as ``torch.nn`` cells and
            ``flax.linen`` cells require. ``torch.nn.GRUCell`` works as
            ``lambda s, u: cell(u, s)``, a Flax cell as ``lambda c, u: cell.apply(params, c, u)``
            (it returns ``(carry, output)``; the carry is taken). The state may be a tuple (an
            LSTM's ``(h, c)``), list or dict of arrays.
        s0: the initial state: ``(*batch, H)`` array(s) — ``torch.Tensor``, ``jax.Array`` or
            ``numpy.ndarray`` — or a tuple/list/dict of them.
        inputs: ``(T, *batch, D)`` (or ``(B, T, ..., D)`` with ``time_axis=1``), the same array
            type and dtype.
        method: one of :func:`available_recurrence_methods` (default ``"jacobi"``, as for
            :func:`ffsolve.solve`), or ``"auto"`` (:mod:`ffsolve.autotune`).
        tol: stop once max |x_new − x| <= tol; 0 means exact (see ``check_loop``).
        max_iters: the most parallel steps (default and at most useful: T).
        jacobian: for the Newton types. ``None``: the analytic Jacobians of a
            :class:`~ffsolve.recurrence.cells.Cell` passed as ``step``, else forward-mode
            autodiff; ``"autodiff"``: forward mode always; a
            :class:`~ffsolve.recurrence.cells.Cell` (or any object with ``full``/``jacobian`` and
            ``diagonal``), a mapping ``{"full": fn, "diagonal": fn}``, or a callable giving the
            full Jacobian. A given Jacobian is called on the folded ``(N, H)`` rows; for a tuple
            state it is the Jacobian of the leaves concatenated.
        damping: σ² of ``damped_newton`` (default :data:`DEFAULT_DAMPING` = 100, the value the
            ELK authors' notebook uses for the diagonal variant: a step's first position is
            pulled back by 1/(1 + σ²) ≈ 1 %; smaller damps more, ∞ is ``newton``).
        time_axis: 0 (time-major inputs) or 1 (batch first); the result's ``x`` follows it.
        trace: record a :class:`RecurrenceTrace` (runs the solve twice: once to learn the final
            iterate, once recording distances to it; for plots, not for timing).
        check_loop: at ``tol=0``, probe whether the parallel result is the loop's bit for bit
            (a few one-time-step calls, or in JAX short runs of the loop, compared with the
            result); sets ``loop_bitwise`` and warns (:class:`NotBitwiseWarning`) when it is not.
        deadline: a ``time.perf_counter()`` value, or an :class:`ffsolve.Deadline` (which may
            also stop a run projected to lose); the solver stops after the step that passes it
            (``stopped_by="deadline"``, ``converged=False``).
        params: PyTorch only: the tensors ``step`` closes over whose gradients you want (any
            iterable of tensors: ``params=[W, U]``, ``params=cell.parameters()`` for a wrapped
            ``torch.nn.GRUCell``). Default: the parameters of an ``nn.Module`` step, or a
            built-in :class:`~ffsolve.recurrence.cells.Cell`'s weights (``Cell.parameters``),
            else none. A step that reads other tensors requiring grad is refused with a
            message (their gradients would be lost), never run.
        backward: how the backward pass solves the adjoint recurrence
            λ_T = g_T, λ_t = g_t + J_{t+1}ᵀ λ_{t+1} (g_t = ∂L/∂s_t, J_{t+1} = ∂step/∂s at
            (s_t, u_{t+1})): ``"loop"`` (default; the reversed loop, BPTT, one step call per
            time step), ``"jacobi"`` (Jacobi iteration on the adjoint system, all time steps
            per batched vector–Jacobian product, until an iteration changes nothing: exact, at
            most T iterations) or ``"scan"`` (a parallel associative scan over the transposed
            full Jacobians: a Cell's analytic ones or ``jacobian=``, else forward-mode
            autodiff; exact arithmetic, reassociated). Then one batched vector–Jacobian product
            of ``step`` over all (s_{t−1}, u_t) gives the gradients of ``inputs``, ``s0`` and
            ``params``. See :mod:`ffsolve.recurrence.grad`.

    Gradients (PyTorch): when grad mode is on and ``s0``, ``inputs`` or a parameter requires
    grad, ``x`` is attached to autograd (a ``torch.autograd.Function``); the forward solve itself
    runs without recording a graph, whatever the method. The gradients are those of the
    recurrence at the returned trajectory: the exact ones at ``tol=0`` (with ``"loop"`` or
    ``"jacobi"`` and a bit-stable step, such as a built-in cell, ∂L/∂s0 and ∂L/∂inputs are those
    of autograd through the loop that stacks its states, bit for bit; the parameters' are within
    rounding, their T per-step parts summed in another order). Not twice differentiable.
    ``method="auto"`` differentiates with the defaults.

    Gradients (JAX): under an eager ``jax.grad``/``jax.vjp`` the solver is a ``jax.custom_vjp``
    of s0, inputs and the floating-point arrays the step closes over (found by tracing the step:
    no ``params`` needed), with the same ``backward`` choices (``"scan"`` with forward-mode
    autodiff Jacobians) compiled into one backward program; equal to ``jax.grad`` through the
    loop within rounding. The forward solve is steered from Python, so under ``jax.jit`` or
    ``jax.vmap`` it raises a ``TypeError``.

    Returns:
        A :class:`RecurrenceResult`; ``x`` has shape ``(T, *batch, H)`` (a tuple state: the same
        structure, each leaf with the time axis) and the type, dtype and device of ``s0``;
        ``iterations <= T`` always.
    """
    from ffsolve.recurrence.grad import BACKWARDS

    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {list(BACKWARDS)}, got {backward!r}")
    if method == "auto":
        from ffsolve import tuning  # ffsolve.autotune's machinery, below this module

        if params is not None or backward != "loop":
            raise ValueError("method='auto' takes no params or backward: it differentiates with "
                             "backward='loop' and the parameters of a Cell or nn.Module step; "
                             "for others pick the method (result.method) and pass it")
        if trace or deadline is not None:
            raise ValueError("method='auto' takes no trace or deadline (it times the methods "
                             "itself); trace the method it chose (result.method) instead")
        return tuning.solve_recurrence_auto(
            step, s0, inputs, solve_recurrence=solve_recurrence, methods=METHODS,
            result_type=RecurrenceResult, tol=tol, max_iters=max_iters, jacobian=jacobian,
            damping=damping, time_axis=time_axis, check_loop=check_loop)
    framework, layout = _check(step, s0, inputs, method, tol, max_iters, damping, time_axis)
    if params is not None and framework != "torch":
        raise ValueError(f"params= names the tensors a PyTorch step closes over (PyTorch-only: in "
                         f"JAX jax.grad finds the arrays a step closes over by tracing it), got "
                         f"{framework} arrays")
    cell = step
    step = getattr(step, "step", step)  # a Cell: its step function
    if jacobian is None and method in NEWTON_TYPES and _has_jacobian(cell):
        jacobian = cell
    u = inputs if time_axis == 0 else _moveaxis(inputs, 1, 0)
    length = int(u.shape[0])
    max_iters = length if max_iters is None else int(max_iters)
    if method == "damped_newton" and damping is None:
        damping = DEFAULT_DAMPING
    problem = _Problem(framework, layout, step, _grouped(layout, step), layout.flat(s0), u, method,
                       float(tol), max_iters, jacobian, damping, length, as_deadline(deadline),
                       check_loop)
    declared = ()
    if framework == "torch":
        from ffsolve.recurrence.grad import parameters_of

        declared = parameters_of(cell, params)

    def forward_with(the_problem):
        res = the_problem.solve(None)
        if trace:
            traced = the_problem.solve(_Recorder(res.x, length))
            traced.loop_bitwise, traced.loop_max_diff, traced.loop_note = (
                res.loop_bitwise, res.loop_max_diff, res.loop_note)
            res = traced
        return res

    if not _wants_gradients(framework, layout, problem, s0, inputs, declared):
        res = forward_with(problem)
    elif framework == "torch":
        from ffsolve.recurrence.grad import differentiable_solve

        res = differentiable_solve(
            lambda: forward_with(problem), flat_step=problem.flat_step,
            jacobian=_backward_jacobian(backward, framework, problem.flat_step, layout, jacobian,
                                        cell),
            backward=backward, s0=problem.s0, u=u, params=declared)
    else:
        from ffsolve.recurrence.grad import jax_differentiable_solve

        given = None
        if method in NEWTON_TYPES and not _is_autodiff(jacobian):
            which = "diagonal" if method == "quasi_newton" else "full"
            fn, cost, take_diagonal = _given_jacobian(jacobian, which)
            given = (_in_row_groups(fn, max(math.prod(layout.batch), 1)), cost, which,
                     take_diagonal)

        def jax_forward(flat_step, given_jacobian, s0_, u_):
            return forward_with(dataclasses.replace(
                problem, flat_step=flat_step, s0=s0_, u=u_,
                jacobian=given_jacobian if given_jacobian is not None else problem.jacobian))

        res = jax_differentiable_solve(jax_forward, flat_step=problem.flat_step, s0=problem.s0,
                                       u=u, backward=backward, jacobian=given)
    if res.loop_bitwise is False:
        warnings.warn(NotBitwiseWarning(res.loop_note), stacklevel=2)
    x = res.x if time_axis == 0 else _moveaxis(res.x, 0, 1)
    res.x = layout.unflat(x)
    return res


def _backward_jacobian(backward, framework, flat_step, layout, jacobian, cell):
    """The full state Jacobians ``(T, *batch, H, H)`` for ``backward="scan"``: the given
    ``jacobian`` or a Cell's analytic one, else forward-mode autodiff; ``None`` for the others."""
    if backward != "scan":
        return None
    if jacobian is None and _has_jacobian(cell):
        jacobian = cell
    if _is_autodiff(jacobian):
        return _autodiff(framework, flat_step, "full")
    given = _given_jacobian(jacobian, "full")[0]
    return _folded(_in_row_groups(given, max(math.prod(layout.batch), 1)))


def _grouped(layout: StateLayout, step: Callable) -> Callable:
    """The flat step, called with :func:`cells.row_group` set to the loop's rows per time step,
    so that the built-in cells compute every time step as the loop does (see ``cells.linear``)."""
    return _in_row_groups(layout.flat_step(step), max(math.prod(layout.batch), 1))


def _in_row_groups(fn: Callable, rows: int) -> Callable:
    from ffsolve.recurrence.cells import row_group

    def grouped(s, u):
        with row_group(rows):
            return fn(s, u)

    return grouped


def _has_jacobian(cell) -> bool:
    return hasattr(cell, "step") and (hasattr(cell, "jacobian") or hasattr(cell, "full"))


def _moveaxis(a, src, dst):
    if hasattr(a, "movedim"):
        return a.movedim(src, dst)
    if isinstance(a, np.ndarray):
        return np.moveaxis(a, src, dst)
    import jax.numpy as jnp

    return jnp.moveaxis(a, src, dst)


def _context(framework):
    if framework == "torch":
        import torch

        return torch.no_grad()
    import contextlib

    return contextlib.nullcontext()


@dataclass
class _Problem:
    """One solve's fixed inputs: the state layout, the flat step, the time-major inputs."""

    framework: str
    layout: StateLayout
    user_step: Callable
    flat_step: Callable  # (*lead, H) × (*lead, D) -> (*lead, H), the user's step on flat states
    s0: Array  # flat (*batch, H)
    u: Array  # (T, *batch, D)
    method: str
    tol: float
    max_iters: int
    jacobian: Any
    damping: float | None
    length: int
    deadline: Deadline | None
    check_loop: bool

    def first_step(self, s0_user, u0=None):
        """The loop's first step, on the user's own state: a step of the wrong shape or return
        type fails here with a clear message. In JAX only its shapes are evaluated
        (``jax.eval_shape``): an eager step would cost more than the trace."""
        u0 = self.u[0] if u0 is None else u0
        if self.framework == "jax":
            import jax

            closed, out = jax.make_jaxpr(
                lambda s, u: self.layout.state_of(self.user_step(s, u)), return_shape=True)(
                    s0_user, u0)
            # Arrays the step closes over that a jax.grad (or jit, vmap) is tracing.
            self.traced_closure = any(isinstance(c, jax.core.Tracer) for c in closed.consts)
        else:
            out = self.layout.state_of(self.user_step(s0_user, u0))
        for got, want in zip(self.layout.leaves(out), self.layout.leaves(s0_user)):
            if tuple(got.shape) != tuple(want.shape):
                raise ValueError(f"step returned states of shape {tuple(got.shape)} for s0 "
                                 f"{tuple(want.shape)}; expected {tuple(want.shape)}")
            if got.dtype != want.dtype:
                raise ValueError(f"step returned dtype {got.dtype}, s0 has {want.dtype}")
        return out

    # -- the loop

    def loop(self):
        """The user's loop, step on ``(*batch, H)`` states; (x, steps done, stopped by deadline)."""
        if self.framework == "jax":
            return _jax_loop(self.flat_step, self.s0, self.u), self.length, False
        s = self.s0
        rows = []
        for t in range(self.length):
            s = self.flat_step(s, self.u[t])
            rows.append(s)
            if self.deadline is not None and t + 1 < self.length \
                    and self.deadline.passed((t + 1) / self.length):
                rows += [self._zeros_like(s)] * (self.length - t - 1)
                return self._stack(rows), t + 1, True
        return self._stack(rows), self.length, False

    def _stack(self, rows):
        if self.framework == "torch":
            import torch

            return torch.stack(rows)
        return np.stack(rows)

    def _zeros_like(self, a):
        return _ops(self.framework).zeros_like(a)

    # -- the parallel methods

    def programs(self):
        """``run(kind, x, e)`` for this problem, and the Jacobian's cost in passes of step."""
        o = _ops(self.framework)
        method = self.method
        which = "diagonal" if method == "quasi_newton" else "full"
        gain, kappa = 1.0, 0.0
        if method == "damped_newton" and not math.isinf(self.damping):
            # Observation gain κ = 1/(1 + σ²) with unit dynamics noise; g = 1 − κ.
            gain, kappa = self.damping / (1.0 + self.damping), 1.0 / (1.0 + self.damping)
        hidden = self.layout.hidden
        given, jac_cost, take_diagonal = None, 0.0, False
        if method in NEWTON_TYPES:
            if _is_autodiff(self.jacobian):
                if self.framework == "numpy":
                    raise ValueError(
                        f"{method!r} needs the step's Jacobian, and NumPy has no autodiff: give "
                        "jacobian=a Cell, {'full': fn, 'diagonal': fn} or a callable (s, u) -> "
                        "(N, H, H); or use method='jacobi', or PyTorch/JAX arrays")
                jac_cost = float(hidden)
            else:
                given, jac_cost, take_diagonal = _given_jacobian(self.jacobian, which)
                given = _in_row_groups(given, max(math.prod(self.layout.batch), 1))
        if self.framework != "jax":
            step = _folded(self.flat_step)
            jac = None
            if method in NEWTON_TYPES:
                jac = _autodiff(self.framework, self.flat_step, which) if given is None \
                    else _diagonal_view(_folded(given), take_diagonal)

            def run(kind, x, e, start=0):
                if kind == "jacobi" and start > 0:
                    return _suffix_jacobi(o, step, self.u, x, start)
                return _iteration(o, step, jac if kind != "jacobi" else None, kind, self.s0,
                                  self.u, x, e, gain, kappa)

            return run, jac_cost
        return self._jax_programs(o, which, given, take_diagonal, gain, kappa), jac_cost

    def _jax_programs(self, o, which, given, take_diagonal, gain, kappa):
        """``run(kind, x, e, start)`` in JAX: compiled programs, cached in :data:`ffsolve.recurrence.programs._PROGRAMS`.

        A Newton-type step is one program on all T time steps. A Jacobi step from ``start`` is
        the program of the window [T − L, T), L = T − start rounded up to a power of two (at most
        T): static slices, so one program per L (at most ⌈log₂T⌉ + 1 per problem, each compiled
        once; a traced ``start`` would still need a static window size), taking ``start`` as an
        argument and writing back only the time steps from it on (:func:`_window_jacobi`). The
        step is traced on L·B rows for each L it meets (a millisecond or so each)."""
        import jax
        import jax.numpy as jnp

        batch_rows = math.prod(self.layout.batch)
        h, d = self.layout.hidden, self.u.shape[-1]
        length = self.length
        dtype_s, dtype_u = self.s0.dtype, self.u.dtype
        traced_steps: dict[int, _Traced] = {}

        def step_on(rows):  # the step traced on ``rows`` folded rows (once per solve and shape)
            if rows not in traced_steps:
                traced_steps[rows] = _trace(self.flat_step, jax.ShapeDtypeStruct((rows, h), dtype_s),
                                            jax.ShapeDtypeStruct((rows, d), dtype_u))
            return traced_steps[rows]

        n = length * batch_rows
        rows_s = jax.ShapeDtypeStruct((n, h), dtype_s)
        rows_u = jax.ShapeDtypeStruct((n, d), dtype_u)
        jac_t = _trace(given, rows_s, rows_u) if given is not None else None
        method = self.method

        def build(kind, step_t):
            def program(step_consts, jac_consts, s0, u, x, e, gain, kappa):
                def rows_step(s, u_):
                    return step_t.fn(step_consts, s, u_)

                if jac_t is None:
                    jac = _autodiff("jax", rows_step, which)
                else:
                    jac = _diagonal_view(
                        _folded(lambda s, u_: jac_t.fn(jac_consts, s, u_)), take_diagonal)
                return _iteration(o, _folded(rows_step), jac, kind, s0, u, x, e, gain, kappa)

            return jax.jit(program)

        def build_window(window, step_t):
            def program(step_consts, s0, u, x, start):
                return _window_jacobi(o, _folded(lambda s, u_: step_t.fn(step_consts, s, u_)),
                                      s0, u, x, start, window)

            return jax.jit(program)

        jac_key = None if method not in NEWTON_TYPES else (
            ("autodiff", which) if jac_t is None else (jac_t.key, which, take_diagonal))

        def run(kind, x, e, start=0):
            if kind == "jacobi":
                # The frontier: only the window [T − L, T) of the time steps from ``start`` on,
                # L = T − start rounded up to a power of two (at most ⌈log₂T⌉ + 1 programs per
                # problem, each compiled once); the window's steps before ``start`` keep x's bits.
                window = _window_length(length, start)
                step_t = step_on(window * batch_rows)
                key = ("window", length, window, step_t.key)
                return _program(key, lambda: build_window(window, step_t))(
                    step_t.consts, self.s0, self.u, x, jnp.asarray(start, dtype=jnp.int32))
            step_t = step_on(n)
            key = ("iteration", kind, step_t.key, jac_key)
            return _program(key, lambda: build(kind, step_t))(
                step_t.consts, jac_t.consts if jac_t is not None else (), self.s0, self.u, x,
                jnp.asarray(e), gain, kappa)

        return run

    def solve(self, recorder) -> RecurrenceResult:
        common = {"method": self.method, "block_size": None, "tol": self.tol,
                  "sequence_length": self.length, "damping": self.damping}
        with _context(self.framework):
            if self.method == "sequential":
                x, steps, cut = self.loop()
                if recorder is not None:
                    recorder.sequential(x)
                return RecurrenceResult(
                    x=x, iterations=steps, converged=not cut,
                    network_evaluations=steps / self.length, trace=_trace_of(recorder),
                    stopped_by="deadline" if cut else "sequential", final_change=None,
                    loop_bitwise=True, **common)
            return self._iterate(recorder, common)

    def _iterate(self, recorder, common) -> RecurrenceResult:
        o = _ops(self.framework)
        run, jac_cost = self.programs()
        method, tol, length = self.method, self.tol, self.length
        x = o.zeros_like(self.s0[None] * o.zeros_like(self.u[..., :1]))  # (T, *batch, H)
        if recorder is not None:
            recorder.start(x)
        kind = method if method in NEWTON_TYPES else "jacobi"
        iterations = newton_its = polish = fallbacks = 0
        work, exact = 0.0, 0
        previous_change = math.inf
        change = math.inf
        changes: list[float] = []  # each step's, for a projecting deadline
        done = 0.0  # the largest progress seen (ffsolve.deadline.progress)
        stopped_by = "max_iters"
        start = 0  # Jacobi steps: the time steps before it are final (not computed again)
        # JAX: Newton-type methods polish on the full shape (their first moving time step stays
        # early, and each window length would be one more compile for the few rows it saves).
        suffix = _FRONTIER.get() and (self.framework != "jax" or method == "jacobi")
        while iterations < self.max_iters:
            x_new, change, per_step, fell_back = run(kind, x, exact, start)
            if suffix and start == 0 and self.framework == "numpy" \
                    and _framework_of(x_new) == "jax":
                # A step that computes in JAX on NumPy arrays (the built-in cells, given NumPy
                # weights): eager JAX compiles anew for every suffix length, which costs far more
                # than the rows it saves, so it keeps one shape. (On JAX arrays the suffix is a
                # compiled window of a power-of-two length: see _jax_programs.)
                suffix = False
            change = float(change)
            iterations += 1
            exact = min(exact + 1, length)
            if kind == "jacobi":
                # Work: the rows computed (JAX: the whole power-of-two window).
                computed = _window_length(length, start) if self.framework == "jax" \
                    else length - start
                work += computed / length
                polish += method in NEWTON_TYPES
                if suffix:
                    # A Jacobi step writes f itself, so a time step whose state came back
                    # unchanged, with every one before it, is a fixed point of the prefix: final.
                    # (Not after a Newton-type step: x + delta can equal x while delta != 0.)
                    start = max(start, _first_moving(per_step, tol=0.0, length=length))
            else:
                work += 1.0 + jac_cost
                newton_its += 1
                fallbacks += bool(fell_back)
            x = x_new
            if recorder is not None:
                recorder.record(x)
            if (kind == "jacobi" or tol > 0) and change <= tol:
                stopped_by = "fixed_point" if change == 0 else "tolerance"
                break
            if exact >= length:
                stopped_by = "exact_prefix"
                break
            changes.append(change)
            projected = None
            if self.deadline is not None and iterations >= MIN_STEPS and self.deadline.due():
                projected = done = max(done, self._progress(per_step, exact, changes))
            if self.deadline is not None and self.deadline.passed(projected):
                stopped_by = "deadline"
                break
            if kind != "jacobi" and (change == 0 or change >= previous_change):
                # The Newton-type change stopped shrinking: the floating-point floor (or a
                # linearisation that no longer helps). Jacobi steps from here: they stop when a
                # step changes nothing, which at tol = 0 is the sequential result.
                kind = "jacobi"
            previous_change = change
        converged = stopped_by in ("fixed_point", "tolerance", "exact_prefix")
        res = RecurrenceResult(
            x=x, iterations=iterations, converged=converged, network_evaluations=work,
            trace=_trace_of(recorder), newton_iterations=newton_its, polish_iterations=polish,
            fallbacks=fallbacks, stopped_by=stopped_by, final_change=change, **common)
        if converged and tol == 0 and self.check_loop and recorder is None:
            res.loop_bitwise, res.loop_max_diff, res.loop_note = self.probe(x)
        return res

    def _progress(self, per_step, exact: int, changes: list[float]) -> float:
        """For a projecting deadline (:func:`ffsolve.deadline.progress`): the fraction of the T
        steps known final (those before the first whose state still changed by more than tol,
        never fewer than the count bound ``exact``), or the steps the change still needs."""
        host = per_step.cpu() if hasattr(per_step, "cpu") else per_step  # a torch GPU tensor
        moving = np.flatnonzero(np.asarray(host) > self.tol)
        settled = max(int(moving[0]) if moving.size else self.length, exact) / self.length
        floor = self.tol if self.tol > 0 else last_bits(self.s0.dtype, changes[0])
        return progress(settled, changes, floor)

    # -- is it the loop's result?

    def probe(self, x, count: int = 4):
        """Compare the result with the loop at a few positions: one-time-step calls of the step
        on the user's shapes (PyTorch, NumPy), or short runs of the loop's own compiled scan
        (JAX). Returns (bitwise, max |difference|, message)."""
        length = self.length
        starts = sorted({round(i * (length - 1) / max(count - 1, 1)) for i in range(count)})
        diff = 0.0
        if self.framework == "jax":
            window = min(length, 4)
            starts = sorted({min(s, length - window) for s in starts})
            prevs = [self.s0 if start == 0 else x[start - 1] for start in starts]
            got = np.asarray(_jax_windows(self.flat_step, prevs, self.u, starts, window))
            want = np.stack([np.asarray(x[start:start + window]) for start in starts])
            if not np.array_equal(got, want):
                diff = max(float(np.max(np.abs(got - want))), _TINY)
        else:
            with _context(self.framework):
                for t in starts:
                    prev = self.s0 if t == 0 else x[t - 1]
                    got = self.flat_step(prev, self.u[t])
                    if not _equal(got, x[t]):
                        diff = max(diff, float(_ops(self.framework).max_abs(got - x[t])), _TINY)
        if diff == 0.0:
            return True, 0.0, ""
        rows = length * max(math.prod(self.layout.batch), 1)
        message = (
            f"solve_recurrence({self.method!r}, tol=0): the result is not the loop's bit for "
            f"bit. The step gives other bits (up to {diff:.3g}) when called on all {rows} rows "
            f"at once than on one time step of shape {self.layout.batch + (self.layout.hidden,)}"
            f", as the loop calls it (for example a matrix product whose kernel depends on the "
            f"number of rows). The result is the batched step's own fixed point, within rounding "
            f"of the loop. For bitwise results compute the step's products with "
            f"ffsolve.recurrence.cells.linear and its elementwise functions through "
            f"cells.rowwise (PyTorch), use a built-in cell, or method='sequential'.")
        return False, diff, message


def _equal(a, b) -> bool:
    if hasattr(a, "detach"):
        import torch

        return bool(torch.equal(a, b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _diagonal_view(fn, take_diagonal: bool):
    if not take_diagonal:
        return fn

    def diagonal(s, u):
        return fn(s, u).diagonal(0, -2, -1)  # torch, NumPy and JAX arrays alike

    return diagonal


# A difference that rounds to zero in max |a − b| (a −0.0 against 0.0) still counts as one.
_TINY = float(np.finfo(np.float32).tiny)


@dataclass
class StepCheck:
    """What :func:`check_step` found: whether the parallel methods can reproduce the loop.

    Attributes:
        bitwise: every position of one batched call equals the loop's step bit for bit.
        max_abs_diff: the largest difference seen (0.0 when bitwise).
        positions: T, the positions compared.
        message: why not, and the remedy ("" when bitwise).
    """

    bitwise: bool
    max_abs_diff: float
    positions: int
    message: str


def check_step(step: Callable, s0, inputs: Array, *, time_axis: int = 0) -> StepCheck:
    """Whether ``solve_recurrence``'s parallel methods can give ``step``'s loop result bit for bit.

    Runs the loop once (``sequential``), then the step on every time position at once as the
    parallel methods call it (all leading axes folded into one batch axis) from the loop's own
    states, and compares every position. A step whose bits depend on how many rows it sees
    (a plain ``x @ W.T`` on CPU) fails; the built-in cells pass in PyTorch.
    """
    framework, layout = _check(step, s0, inputs, "sequential", 0.0, None, None, time_axis)
    step = getattr(step, "step", step)
    u = inputs if time_axis == 0 else _moveaxis(inputs, 1, 0)
    flat_step = _grouped(layout, step)
    o = _ops(framework)
    with _context(framework):
        problem = _Problem(framework, layout, step, flat_step, layout.flat(s0), u, "sequential", 0.0,
                           int(u.shape[0]), None, None, int(u.shape[0]), None, False)
        x, _, _ = problem.loop()
        prev = o.prev(problem.s0, x)
        if framework == "jax":
            import jax

            batched = jax.jit(_folded(flat_step))(prev, u)
        else:
            batched = _folded(flat_step)(prev, u)
        same = _equal(batched, x)
        diff = float(o.max_abs(batched - x))
    message = "" if same else (
        f"step gives other bits (up to {diff:.3g}) on all positions at once than in the loop; "
        "compute its products with ffsolve.recurrence.cells.linear and its elementwise functions "
        "through cells.rowwise (PyTorch), or use a built-in cell")
    return StepCheck(same, 0.0 if same else max(diff, _TINY),
                     int(u.shape[0]), message)


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


def _trace_of(recorder) -> RecurrenceTrace | None:
    if recorder is None:
        return None
    iterates = np.stack(recorder.iterates) if recorder.keep and recorder.iterates else np.zeros(0)
    return RecurrenceTrace(change=np.asarray(recorder.change), error=np.asarray(recorder.error),
                           iterates=iterates, max_change=np.asarray(recorder.max_change),
                           max_error=np.asarray(recorder.max_error))
