"""Gradients through :func:`ffsolve.solve_recurrence` (PyTorch): the adjoint recurrence.

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
* ``"scan"``: the same linear recurrence by a parallel associative scan over affine maps
  (:func:`ffsolve.recurrence.scan.torch_scan` with :func:`~ffsolve.recurrence.scan.affine_full`,
  the combine the ``newton`` forward method uses) on the reversed time axis, with the full
  Jacobians Jᵀ from the step's analytic ``jacobian`` (a Cell, or ``jacobian=``) or forward-mode
  autodiff. Exact arithmetic, reassociated sums: equal to the loop within rounding.

Then one batched vector–Jacobian product of ``step`` over all (s_{t−1}, u_t) pairs at once, with
cotangents λ, gives every gradient: ∂L/∂u_t (row t), ∂L/∂s_0 (row 1's state part) and the
parameters' (summed over all rows by autograd).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ffsolve.recurrence import scan as scans

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
    # scan: μ_k = λ[T−1−k] = g[T−1−k] + J_{T−k}ᵀ μ_{k−1} (μ_{−1} = 0), affine maps (A_k, b_k).
    # jacobians()[i] = J_{i+1}; flipped, row k is J_{T−k}, so A_k = J_{T−k}ᵀ is row k − 1 of it.
    a = _shift_down(jacobians().mT.flip(0))
    return scans.torch_scan(scans.affine_full, (a, g.flip(0)))[1].flip(0)


def _shift_down(a):
    """(0, a_0, …, a_{T−2}): row i + 1 holds a_i (for the scan, A_k = a_{k−1}; the first map's
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
