"""Gradients through :func:`ffsolve.solve_recurrence` (PyTorch and JAX): the adjoint recurrence.

The forward solve returns s_1..s_T. For a loss L with g_t = ∂L/∂s_t (the cotangent of the result),
the adjoints λ_t = dL/ds_t (through every later state) satisfy, backwards in time,

    λ_T = g_T,    λ_t = g_t + J_{t+1}ᵀ λ_{t+1},    J_{t+1} = ∂step/∂s at (s_t, u_{t+1}),

a linear recurrence in the transposed Jacobians, solved by the caller's ``backward``:

* ``"loop"`` (the default, BPTT): the reversed loop, t = T … 1, each J_{t+1}ᵀ λ_{t+1} a
  vector–Jacobian product of one call of ``step`` on the loop's ``(*batch, H)`` states — the
  products autograd through the user's own loop computes;
* ``"jacobi"``: Jacobi iteration on the adjoint system, λ ← g + shift(Jᵀ λ), all t at once (one
  batched vector–Jacobian product per iteration, on one retained graph of the batched step).
  The exact suffix grows by at least one per iteration, so it reaches the fixed point in at most T
  iterations; it stops when an iteration changes nothing (exact: no tolerance);
* ``"scan"``: the same linear recurrence by a parallel scan over affine maps on the reversed
  time axis (PyTorch: the odd-even reduction of :mod:`ffsolve.recurrence.linear`, which the
  ``rnn_backprop`` experiment's scans use too; JAX: ``lax.associative_scan``), with the full
  Jacobians Jᵀ from the step's analytic ``jacobian`` (a Cell, or ``jacobian=``) or forward-mode
  autodiff. Exact arithmetic, reassociated sums: equal to the loop within rounding.

Then one batched vector–Jacobian product of ``step`` over all (s_{t−1}, u_t) pairs at once, with
cotangents λ, gives every gradient: ∂L/∂u_t (row t), ∂L/∂s_0 (row 1's state part) and the
parameters' (summed over all rows by autograd).

PyTorch: :func:`differentiable_solve`, a ``torch.autograd.Function``; the parameters are the
tensors the caller declares (:func:`parameters_of`). JAX: :func:`jax_differentiable_solve`, a
``jax.custom_vjp`` whose differentiable arguments are s0, the inputs and the floating-point
arrays the step closes over (found by tracing it); its backward is one compiled program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ffsolve.recurrence import linear
from ffsolve.recurrence import scan as scans
from ffsolve.recurrence.jacobians import _row_jacobian
from ffsolve.recurrence.programs import _program, _trace

BACKWARDS = ("loop", "jacobi", "scan")


def available_recurrence_backwards() -> list[str]:
    """The ``backward`` names :func:`ffsolve.solve_recurrence` accepts (its gradients' adjoint
    solvers)."""
    return list(BACKWARDS)


def parameters_of(step, params) -> tuple:
    """The tensors gradients flow to besides s0 and inputs: ``params`` when given (any iterable of
    tensors, e.g. ``module.parameters()``), else an ``nn.Module`` step's ``parameters()``, else a
    built-in :class:`~ffsolve.recurrence.cells.Cell`'s ``parameters`` (its weights), else none."""
    import torch

    if params is None:
        if isinstance(step, torch.nn.Module):
            params = step.parameters()
        else:
            params = getattr(step, "parameters", ())
            if callable(params):  # an object with a parameters() method
                params = params()
    if isinstance(params, torch.Tensor):
        params = (params,)
    params = tuple(params)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params must be tensors (those the step closes over), got "
                            f"{type(p).__name__}")
    unique, seen = [], set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    return tuple(unique)


def undeclared_leaves(out, params: Sequence) -> list:
    """Tensors requiring grad that ``out`` (one step from detached s0 and inputs) depends on
    other than through ``params``: the leaves of its autograd graph not behind a declared tensor.
    Their gradients would be dropped silently; the caller refuses them."""
    import torch

    stop_nodes = {(p.grad_fn, p.output_nr) for p in params if p.grad_fn is not None}
    declared = {id(p) for p in params}
    found, seen = [], set()
    roots = [(o.grad_fn, o.output_nr) for o in out if isinstance(o, torch.Tensor)
             and o.grad_fn is not None]
    leaves = [o for o in out if isinstance(o, torch.Tensor) and o.requires_grad
              and o.grad_fn is None]
    stack = list(roots)
    while stack:
        node, nr = stack.pop()
        if node is None or (node, nr) in stop_nodes:
            continue
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if variable is not None:
            leaves.append(variable)
            continue
        stack.extend(node.next_functions)
    for leaf in leaves:
        if id(leaf) not in declared and all(leaf is not f for f in found):
            found.append(leaf)
    return found


# ------------------------------------------------------------------------- adjoint solvers


def adjoint(backward: str, g, *, batched_vjp: Callable, step_vjp: Callable,
            jacobians: Callable) -> Any:
    """λ (``(T, *batch, H)``, λ[i] = dL/dx[i]) from the cotangent ``g`` of x = s_1..s_T.

    ``batched_vjp(c, first)``: row i is first[i] + J_{i+1}ᵀ c[i], all rows at once;
    ``step_vjp(i, c, first)``: first + J_{i+1}ᵀ c for row i alone, on the loop's shapes;
    ``jacobians()``: J_{i+1} for every row, ``(T, *batch, H, H)``.
    (``first`` enters autograd's sum before the step's own uses of its state, as the stacked
    result's cotangent does in autograd through the user's loop: the same additions in the same
    order, so ``loop`` and ``jacobi`` give that loop's λ bit for bit when the step is bit-stable.)
    """
    import torch

    length = g.shape[0]
    if backward == "loop":
        lam = g.clone()
        for i in range(length - 2, -1, -1):
            lam[i] = step_vjp(i + 1, lam[i + 1], g[i])
        return lam
    if backward == "jacobi":
        first = _shift_down(g)  # row i + 1 (whose state is x[i]) starts from g[i]
        lam = g
        for _ in range(length):
            new = torch.cat([batched_vjp(lam, first)[1:], g[-1:]], 0)
            if bool((new == lam).all()):
                break
            lam = new
        return new
    # scan: μ_k = λ[T−1−k] = g[T−1−k] + μ_{k−1} J_{T−k} as row vectors (μ_{−1} = 0): the affine
    # recurrence of ffsolve.recurrence.linear with M_k = J_{T−k}. jacobians()[i] = J_{i+1};
    # flipped, row k is J_{T−k}, so M_k is row k − 1 of it.
    m = _shift_down(jacobians().flip(0))
    return linear.odd_even(m, g.flip(0))[0].flip(0)


def _shift_down(a):
    """(0, a_0, …, a_{T−2}): row i + 1 holds a_i (for the scan, M_k = a_{k−1}; the first map's
    matrix is never read)."""
    import torch

    return torch.cat([torch.zeros_like(a[:1]), a[:-1]], 0)


# --------------------------------------------------------------------- autograd.Function


def differentiable_solve(solve: Callable, *, flat_step: Callable, jacobian: Callable | None, backward: str,
                         s0, u, params: tuple):
    """Run ``solve()`` (the no-grad forward solve, returning a RecurrenceResult whose ``x`` is
    the flat ``(T, *batch, H)`` trajectory) inside a ``torch.autograd.Function`` whose backward
    solves the adjoint recurrence by ``backward`` and takes one batched vector–Jacobian product.

    ``flat_step``: the step on flat states of any leading shape: the loop's ``(*batch, H)``,
    and here also the parallel methods' batched call on ``(T·B, H)`` rows;
    ``jacobian``: ``(prev, u) -> (T, *batch, H, H)`` full Jacobians, for ``backward="scan"``.
    Returns the result with ``x`` attached to the autograd graph.
    """
    import torch

    box: list = []

    class _Solve(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s0_, u_, *params_):
            res = solve()
            box.append(res)
            ctx.save_for_backward(s0_, u_, res.x)
            return res.x

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, g):
            s0_, u_, x = ctx.saved_tensors
            need_s0, need_u, *need_params = ctx.needs_input_grad
            wanted = [p for p, need in zip(params, need_params) if need]
            shape, hidden = x.shape, x.shape[-1]
            # The batched step on (T·B, H) rows whose leaf is the rows themselves (no reshape
            # between them and the step), so that autograd sums a row's parts in the order it
            # does for one call of the loop's.
            prev = torch.cat([s0_[None], x[:-1]], 0)
            with torch.enable_grad():
                rows = prev.reshape(-1, hidden).detach().requires_grad_(True)
                u_rows = u_.reshape(-1, u_.shape[-1]).detach().requires_grad_(need_u)
                f_rows = flat_step(rows, u_rows)

            def batched_vjp(c, first):
                with torch.enable_grad():
                    alias = rows.view_as(rows)  # made after f_rows: autograd adds its part first
                out = torch.autograd.grad([alias, f_rows], rows,
                                          [first.reshape(rows.shape), c.reshape(rows.shape)],
                                          retain_graph=True)[0]
                return out.reshape(shape)

            def step_vjp(i, c, first):
                with torch.enable_grad():
                    p = prev[i].detach().requires_grad_(True)
                    out = flat_step(p, u_[i].detach())
                    alias = p.view_as(p)
                    return torch.autograd.grad([alias, out], p, [first, c], retain_graph=True)[0]

            def jacobians():
                with torch.no_grad():
                    return jacobian(prev, u_.detach())

            lam = adjoint(backward, g.contiguous(), batched_vjp=batched_vjp,
                          step_vjp=step_vjp, jacobians=jacobians)
            inputs = [rows] + ([u_rows] if need_u else []) + wanted
            # retain_graph: the step may close over tensors computed outside it (a weight's view),
            # whose graph a later backward of the caller's may still need.
            grads = torch.autograd.grad(f_rows, inputs, lam.reshape(rows.shape),
                                        allow_unused=True, retain_graph=True)
            grad_s0 = grads[0].reshape(shape)[0] if need_s0 else None
            grad_u = grads[1].reshape(u_.shape) if need_u else None
            rest = iter(grads[1 + need_u:])
            grad_params = []
            for p, need in zip(params, need_params):
                got = next(rest) if need else None
                if need and got is None:
                    got = torch.zeros_like(p)
                grad_params.append(got)
            return (grad_s0, grad_u, *grad_params)

    x = _Solve.apply(s0, u, *params)
    res = box[-1]
    res.x = x
    return res


# ------------------------------------------------------------------------ JAX: custom_vjp


def jax_differentiable_solve(forward_with: Callable, *, flat_step: Callable, s0, u,
                             backward: str, jacobian=None):
    """The JAX counterpart of :func:`differentiable_solve`: a ``jax.custom_vjp`` function of
    (s0, inputs, the floating-point arrays the step closes over).

    The step (and a given Jacobian) is traced once at the loop's shape ``(*batch, H)`` and once at
    the batched rows ``(T·B, H)``; the arrays it closes over (the weights a ``jax.grad`` traces)
    become explicit arguments. The forward solve is steered from Python, so it runs only on
    concrete values: under an eager ``jax.grad``/``jax.vjp`` it does (custom_vjp hands the forward
    rule concrete arrays); under ``jax.jit`` or ``jax.vmap`` it raises a ``TypeError``.

    ``forward_with(step, jacobian, s0, u)``: the no-grad solve with that flat step and Jacobian
    (a mapping or ``None``), returning a RecurrenceResult with the flat time-major ``x``.
    ``jacobian``: ``None`` or ``(fn, cost, which, take_diagonal)`` for the Newton types.
    """
    import jax
    import jax.numpy as jnp

    shape = (u.shape[0],) + tuple(s0.shape)
    hidden, inputs = s0.shape[-1], u.shape[-1]
    n = math.prod(shape[:-1])
    loop_s = jax.ShapeDtypeStruct(tuple(s0.shape), s0.dtype)
    loop_u = jax.ShapeDtypeStruct(tuple(u.shape[1:]), u.dtype)
    rows_s = jax.ShapeDtypeStruct((n, hidden), s0.dtype)
    rows_u = jax.ShapeDtypeStruct((n, inputs), u.dtype)
    traced = {"loop": _trace(flat_step, loop_s, loop_u, allow_tracers=True),
              "rows": _trace(flat_step, rows_s, rows_u, allow_tracers=True)}
    if jacobian is not None:
        traced["jac"] = _trace(jacobian[0], rows_s, rows_u, allow_tracers=True)
    # Every array the traces close over becomes an argument: the floating-point ones (one per
    # distinct array) differentiable, the others (integer tables, masks) not.
    floats, others, index, where = [], [], {}, {}
    for name, t in traced.items():
        spots = []
        for c in t.consts:
            if hasattr(c, "dtype") and jnp.issubdtype(c.dtype, jnp.inexact):
                if id(c) not in index:
                    index[id(c)] = len(floats)
                    floats.append(c)
                spots.append((0, index[id(c)]))
            else:
                spots.append((1, len(others)))
                others.append(c)
        where[name] = tuple(spots)

    def pure(name):
        t, spots = traced[name], where[name]

        def fn(cs, fx, s, x):  # kind 2: a concrete array only that trace holds (i is it)
            return t.fn([(cs, fx)[kind][i] if kind < 2 else i for kind, i in spots], s, x)

        return fn

    loop_fn, rows_fn = pure("loop"), pure("rows")
    jac_fn = pure("jac") if jacobian is not None else None
    fixed = tuple(others)
    other_index = {id(c): i for i, c in enumerate(others)}

    def rows_at(m):
        """The step on ``m`` rows (Jacobi's frontier windows, m < T·B): traced when first asked,
        its closed-over arrays taken from the same arguments as the other traces'."""
        name = ("rows", m)
        if name not in traced:
            t = _trace(flat_step, jax.ShapeDtypeStruct((m, hidden), s0.dtype),
                       jax.ShapeDtypeStruct((m, inputs), u.dtype), allow_tracers=True)
            spots = []
            for c in t.consts:
                if id(c) in index:
                    spots.append((0, index[id(c)]))
                elif id(c) in other_index:
                    spots.append((1, other_index[id(c)]))
                elif not isinstance(c, jax.core.Tracer):
                    spots.append((2, c))  # a constant of this shape's own (no gradient)
                else:
                    raise ValueError(
                        f"internal: the step traced on {m} rows closes over a traced array the "
                        f"traces on {n} rows do not (shape {getattr(c, 'shape', '?')}); please "
                        "report it")
            traced[name], where[name] = t, tuple(spots)
        return pure(name)

    def step_with(cs):
        def step(s, x):
            if tuple(s.shape) == (n, hidden):
                return rows_fn(cs, fixed, s, x)
            if tuple(s.shape) == tuple(s0.shape):
                return loop_fn(cs, fixed, s, x)
            if s.ndim == 2 and s.shape[-1] == hidden and 0 < s.shape[0] < n:
                return rows_at(int(s.shape[0]))(cs, fixed, s, x)
            raise ValueError(f"internal: the traced step was called on shape {tuple(s.shape)}")

        return step

    def jacobian_with(cs):
        if jac_fn is None:
            return None
        _, cost, which, take_diagonal = jacobian
        key = "full" if take_diagonal else which
        return {key: lambda s, x: jac_fn(cs, fixed, s, x), f"{key}_cost": cost}

    box: list = []

    def solve(s0_, u_, cs):
        if any(isinstance(a, jax.core.Tracer) for a in (s0_, u_, *cs)):
            raise TypeError(
                "solve_recurrence cannot run under jax.jit or jax.vmap, nor inside a second "
                "derivative (it steers its iterations from Python); call it on concrete arrays. "
                "It is differentiable once by an eager jax.grad / jax.vjp (a custom_vjp).")
        res = forward_with(step_with(cs), jacobian_with(cs), s0_, u_)
        box.append(res)
        return res.x

    @jax.custom_vjp
    def run(s0_, u_, cs):
        return solve(s0_, u_, cs)

    def fwd(s0_, u_, cs):
        x = solve(s0_, u_, cs)
        return x, (s0_, u_, cs, x)

    # The backward pass, one compiled program per traced step, backward and shape (weights and
    # tables are its arguments, so a cached program is never stale).
    key = ("adjoint", backward, traced["loop"].key, traced["rows"].key, where["loop"],
           where["rows"], shape, inputs)

    def build():
        def program(s0_, u_, cs, fx, x, g):
            prev = jnp.concatenate([s0_[None], x[:-1]], 0)
            rows, u_rows = prev.reshape(n, hidden), u_.reshape(n, inputs)
            lam = _jax_adjoint(backward, g, loop_fn=lambda p, x_: loop_fn(cs, fx, p, x_),
                               rows_fn=lambda p, x_: rows_fn(cs, fx, p, x_), prev=prev, u=u_,
                               rows=rows, u_rows=u_rows)
            _, vjp_all = jax.vjp(lambda p, x_, c: rows_fn(c, fx, p, x_), rows, u_rows, cs)
            d_rows, d_u, d_cs = vjp_all(lam.reshape(n, hidden))
            return d_rows.reshape(shape)[0], d_u.reshape(u_.shape), d_cs

        return jax.jit(program)

    def bwd(saved, g):
        s0_, u_, cs, x = saved
        return _program(key, build)(s0_, u_, cs, fixed, x, g)

    run.defvjp(fwd, bwd)
    x = run(s0, u, tuple(floats))
    res = box[-1]
    res.x = x
    return res


def _jax_adjoint(backward, g, *, loop_fn, rows_fn, prev, u, rows, u_rows):
    """λ in JAX, traceable, as :func:`adjoint`: ``loop`` a reversed ``lax.scan`` of one-step
    VJPs on the loop's shapes; ``jacobi`` a ``lax.while_loop`` of batched VJPs until an iteration
    changes nothing (at most T); ``scan`` ``lax.associative_scan`` over the transposed full
    Jacobians, by forward-mode autodiff of the step on all rows."""
    import jax
    import jax.numpy as jnp

    length, shape = g.shape[0], g.shape
    if backward == "loop":
        def body(lam_next, row):
            g_i, p, x = row
            _, vjp = jax.vjp(lambda p_: loop_fn(p_, x), p)
            lam = g_i + vjp(lam_next)[0]
            return lam, lam

        _, lams = jax.lax.scan(body, g[-1], (g[:-1], prev[1:], u[1:]), reverse=True)
        return jnp.concatenate([lams, g[-1:]], 0)
    if backward == "jacobi":
        _, vjp_prev = jax.vjp(lambda p: rows_fn(p, u_rows), rows)
        first = jnp.concatenate([jnp.zeros_like(g[:1]), g[:-1]], 0)

        def iterate(state):
            k, lam, _ = state
            new = first + vjp_prev(lam.reshape(rows.shape))[0].reshape(shape)
            new = jnp.concatenate([new[1:], g[-1:]], 0)
            return k + 1, new, jnp.all(new == lam)

        def going(state):
            k, _, done = state
            return (k < length) & ~done

        return jax.lax.while_loop(going, iterate, (0, g, jnp.asarray(False)))[1]
    jac = _row_jacobian("jax", rows_fn, "full")(rows, u_rows).reshape(shape + (shape[-1],))
    a = jnp.swapaxes(jac, -1, -2)[::-1]
    a = jnp.concatenate([jnp.zeros_like(a[:1]), a[:-1]], 0)
    return jax.lax.associative_scan(scans.affine_full, (a, g[::-1]))[1][::-1]
