"""Gradients through :func:`ffsolve.solve`: the adjoint of a triangular system.

The forward solve returns the fixed point x* = f(x*; θ) of a triangular map (output position t
reads only input positions < t along ``axis``). For a loss L with cotangent g = ∂L/∂x*, the
implicit-function theorem gives the adjoint λ = dL/dx* (through every later position) as the
solution of

    λ = g + J_xᵀ λ,        J_x = ∂f/∂x at x*,

and dL/dθ = λᵀ ∂f/∂θ at x*: one vector–Jacobian product of ``f``. J_x is strictly triangular
along ``axis`` (position s of f's output reads inputs < s only), so Jᵀ is nilpotent and the
adjoint system is solved exactly, with no tolerance, by the caller's ``backward``:

* ``"sequential"`` (the default): backward substitution, the reversed sequential sweep. For
  s = T−1 … 1, one vector–Jacobian product of f (on one graph of f at x*, retained) with the
  cotangent λ_s at position s alone adds output s's part to λ at every earlier position; λ_s is
  final when its turn comes. T − 1 products, the mirror of the forward ``sequential`` method, and
  the products (and order of sums) that autograd through the plain sequential evaluation forms.
* ``"jacobi"``: Jacobi iteration on the adjoint system, λ ← g + Jᵀλ, one product per iteration
  for every position at once. The exact suffix grows by one position per iteration, so it is
  exact after at most T − 1 iterations; it stops as soon as an iteration changes nothing.

The initial guess x0 gets no gradient (a zero one in PyTorch, where it takes part): the fixed
point does not depend on it. Parameters are the tensors ``f`` closes over, as for
:func:`ffsolve.solve_recurrence` (``params=``; by default an ``nn.Module`` f's parameters), found
and checked by the same helpers (:func:`ffsolve.recurrence.grad.parameters_of`,
:func:`~ffsolve.recurrence.grad.undeclared_leaves`).

PyTorch: :func:`differentiable_solve`, a ``torch.autograd.Function``, differentiable once (a
backward asked to record a graph, ``create_graph=True``, raises). JAX:
:func:`jax_differentiable_solve`, a ``jax.custom_vjp`` whose differentiable arguments are x0 and
the floating-point arrays f closes over (found by tracing it, as the recurrence solver does); it
runs under an eager ``jax.grad`` (the Python driver) and under ``jax.jit``/``jax.vmap`` (the
compiled driver, :mod:`ffsolve.solvers.compiled`), and raises a ``TypeError`` inside a second
derivative. NumPy: no gradients.
"""

from __future__ import annotations

from collections.abc import Callable

from ffsolve.solvers import arrays

BACKWARDS = ("sequential", "jacobi")


def available_backwards() -> list[str]:
    """The ``backward`` names :func:`ffsolve.solve` accepts (its gradients' adjoint solvers)."""
    return list(BACKWARDS)


def check_backward(backward) -> str:
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {list(BACKWARDS)}, got {backward!r}")
    return backward


# ------------------------------------------------------------------------- the adjoint solve


def adjoint(backward: str, g, *, vjp: Callable, axis: int):
    """λ, shaped like ``g``, solving λ = g + Jᵀλ for a strictly triangular J along ``axis``.

    ``vjp(c, first)``: first + Jᵀc (``first`` enters autograd's sum before f's own uses of its
    input, the order in which autograd through the sequential evaluation adds the part that
    reaches a position directly to the parts that reach it through f; see
    :func:`differentiable_solve`).
    """
    import torch

    length = g.shape[axis]
    if backward == "sequential":
        lam = g.clone()
        for s in range(length - 1, 0, -1):  # λ_s is final here; position 0 feeds no one
            at = arrays.index_along(axis, g.ndim, slice(s, s + 1))
            c = torch.zeros_like(g)
            c[at] = lam[at]
            lam = vjp(c, lam)
        return lam
    lam = g
    for _ in range(length - 1):  # after k iterations the last k + 1 positions are exact
        new = vjp(lam, g)
        done = bool((new == lam).all())
        lam = new
        if done:
            break
    return lam


# --------------------------------------------------------------------- autograd.Function


def undeclared_message(hidden) -> str:
    shapes = ", ".join(str(tuple(a.shape)) for a in hidden[:4])
    return ("ffsolve.solve does not propagate gradients yet to tensors f closes over without "
            f"declaring them: f reads {len(hidden)} tensor(s) that require grad (shapes {shapes}) "
            "and are not among its parameters. Name them: params=[...] (an nn.Module f declares "
            "its own), or call it under torch.no_grad() (or detach them) for a forward solve.")


def refuse_undeclared(f, x0, declared) -> None:
    """One call of ``f`` on the detached ``x0`` with grad on: refuse (``RuntimeError``) tensors
    requiring grad that f reads other than through ``declared``, whose gradients would be lost."""
    import torch

    from ffsolve.recurrence.grad import undeclared_leaves

    with torch.enable_grad():
        y = f(x0.detach())
    if isinstance(y, torch.Tensor):
        hidden = undeclared_leaves([y], declared)
        if hidden:
            raise RuntimeError(undeclared_message(hidden))


def wants_gradients(x0, declared) -> bool:
    """PyTorch with grad mode on and x0 or a declared parameter requiring grad."""
    import torch

    return torch.is_grad_enabled() and (
        x0.requires_grad or any(p.requires_grad for p in declared))


def differentiable_solve(run: Callable, *, f: Callable, x0, params: tuple, backward: str,
                         axis: int):
    """Run ``run()`` (the no-grad forward solve, returning a SolveResult) inside a
    ``torch.autograd.Function`` whose backward solves the adjoint system by ``backward`` and
    takes one vector–Jacobian product of ``f`` at x* for the parameters; x0 gets zeros.
    Returns the result with ``x`` attached to the autograd graph."""
    import torch

    box: list = []

    class _Solve(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x0_, *params_):
            with torch.no_grad():
                res = run()
            box.append(res)
            ctx.save_for_backward(res.x)
            return res.x

        @staticmethod
        def backward(ctx, g):
            if torch.is_grad_enabled():  # create_graph=True: autograd wants a graph of this pass
                raise RuntimeError(
                    "ffsolve.solve is differentiable once: its backward pass (the adjoint solve) "
                    "records no graph, so it cannot give second derivatives (create_graph=True, "
                    "a Hessian or a gradient penalty through it)")
            (x,) = ctx.saved_tensors
            need_x0, *need_params = ctx.needs_input_grad
            wanted = [p for p, need in zip(params, need_params) if need]
            grad_x0 = torch.zeros_like(x) if need_x0 else None
            grads = []
            if wanted:
                with torch.enable_grad():
                    xin = x.detach().requires_grad_(True)
                    y = f(xin)
                    # made after y: autograd adds ``first`` before f's own parts at x (the order
                    # of autograd through the sequential evaluation, whose copy is made after f)
                    alias = xin.view_as(xin)

                def vjp(c, first):
                    got = torch.autograd.grad([alias, y], xin, [first, c], retain_graph=True,
                                              allow_unused=True)[0]
                    return first.clone() if got is None else got

                if y.requires_grad:
                    lam = adjoint(backward, g.contiguous(), vjp=vjp, axis=axis)
                    # retain_graph: f may close over tensors computed outside it (a weight's
                    # view) whose graph a later backward of the caller's may still need.
                    grads = list(torch.autograd.grad(y, wanted, lam, allow_unused=True,
                                                     retain_graph=True))
            rest = iter(grads)
            grad_params = []
            for p, need in zip(params, need_params):
                got = next(rest, None) if need else None
                if need and got is None:
                    got = torch.zeros_like(p)
                grad_params.append(got)
            return (grad_x0, *grad_params)

    x = _Solve.apply(x0, *params)
    res = box[-1]
    res.x = x
    return res


# ------------------------------------------------------------------------ JAX: custom_vjp


class TracedClosure(Exception):
    """Internal: a JAX f returned a tracer for a concrete x0 (it closes over arrays a jax.grad,
    jit or vmap is tracing); :func:`ffsolve.solve` then takes the custom_vjp path."""


def jax_differentiable_solve(run: Callable, *, f: Callable, x0, backward: str, axis: int,
                             compiled=None, driver: Callable | None = None,
                             program_key: tuple = (), refuse: Callable | None = None,
                             finish: Callable | None = None):
    """The JAX counterpart of :func:`differentiable_solve`: a ``jax.custom_vjp`` function of
    (x0, the floating-point arrays ``f`` closes over), found by tracing f at x0's shape (the
    helpers :func:`ffsolve.recurrence.programs._trace` and ``_program`` the recurrence solver
    uses too).

    The forward solve: where x0 or those arrays are traced (``jax.jit``, ``jax.vmap``, or a
    ``jax.grad`` under either), or ``compiled`` is True, the compiled driver
    ``driver(fn, x0)`` (:func:`ffsolve.solvers.compiled.run`: one ``lax.while_loop``,
    traced into the caller's program, or jitted and cached by ``program_key`` and f's jaxpr for
    concrete arrays); else the Python driver ``run(fn, x0)`` on the concrete values an eager
    ``jax.grad``/``jax.vjp`` hands the forward rule. Inside a second derivative it raises a
    ``TypeError``; ``refuse()`` raises for options that need the host, before a traced solve.
    The backward is one compiled program per traced f, backward method and shape (the weights
    are its arguments, so a cached program is never stale): ``"sequential"`` a
    ``lax.fori_loop`` of one-position vector–Jacobian products, ``"jacobi"`` a
    ``lax.while_loop`` until an iteration changes nothing (at most T − 1). x0's cotangent is zero.

    ``run(f, x0)``: the Python driver with that map, returning a SolveResult; ``finish(x,
    stats)``: the SolveResult of a compiled run (``stats`` as the driver returns them).
    """
    import jax
    import jax.numpy as jnp

    from ffsolve.recurrence.programs import _program, _trace

    traced = _trace(f, jax.ShapeDtypeStruct(tuple(x0.shape), x0.dtype), allow_tracers=True)
    floats, others, spots = [], [], []
    for c in traced.consts:
        if hasattr(c, "dtype") and jnp.issubdtype(c.dtype, jnp.inexact):
            spots.append((0, len(floats)))
            floats.append(c)
        else:
            spots.append((1, len(others)))
            others.append(c)
    fixed, spots = tuple(others), tuple(spots)

    def pure(cs, fx, x):
        return traced.fn([(cs, fx)[kind][i] for kind, i in spots], x)

    box: list = []

    def build_forward():
        def program(cs, fx, x0_):
            return driver(lambda x: pure(cs, fx, x), x0_)

        return jax.jit(program)

    forward_key = ("solve_forward", program_key, traced.key, spots, tuple(x0.shape),
                   str(x0.dtype))

    def forward(x0_, cs):
        leaves = (x0_, *cs, *fixed)
        if not any(isinstance(a, jax.core.Tracer) for a in leaves):
            if compiled:
                x, stats = _program(forward_key, build_forward)(cs, fixed, x0_)
                box.append(None)
                return x, stats
            res = run(lambda x: pure(cs, fixed, x), x0_)
            box.append(res)
            return res.x, ()
        if any(_differentiating(a) for a in leaves):
            raise TypeError(
                "ffsolve.solve is differentiable once: it cannot run inside a second derivative "
                "(its compiled loop, a lax.while_loop, has no reverse-mode derivative; its "
                "gradient is the custom_vjp of the adjoint system).")
        if refuse is not None:
            refuse()
        x, stats = driver(lambda x: pure(cs, fixed, x), x0_)
        box.append(None)
        return x, stats

    @jax.custom_vjp
    def solved(x0_, cs):
        return forward(x0_, cs)

    def fwd(x0_, cs):
        x, stats = forward(x0_, cs)
        return (x, stats), (cs, x)

    key = ("solve_adjoint", backward, traced.key, spots, tuple(x0.shape), str(x0.dtype), axis)

    def build():
        def program(cs, fx, x, g):
            _, vjp = jax.vjp(lambda x_, c: pure(c, fx, x_), x, cs)
            lam = _jax_adjoint(backward, g, lambda c: vjp(c)[0], axis)
            return vjp(lam)[1]

        return jax.jit(program)

    def bwd(saved, cotangents):
        cs, x = saved
        g = cotangents[0]  # the stop record's outputs (counts, codes) carry no gradient
        return jnp.zeros_like(x), _program(key, build)(cs, fixed, x, g)

    solved.defvjp(fwd, bwd)
    x, stats = solved(x0, tuple(floats))
    res = box[-1]
    if res is None:
        return finish(x, stats)
    res.x = x
    return res


def _differentiating(a) -> bool:
    """``a`` is (or wraps, under a vmap) a tracer of forward- or reverse-mode differentiation:
    the solve was reached inside a derivative of its own gradient."""
    from jax._src.interpreters import ad

    kinds = tuple(k for k in (getattr(ad, "JVPTracer", None), getattr(ad, "LinearizeTracer", None))
                  if k is not None)
    while a is not None:
        if isinstance(a, kinds):
            return True
        a = getattr(a, "val", None)
    return False


def _jax_adjoint(backward, g, vjp_x, axis):
    """λ in JAX, traceable, as :func:`adjoint`: ``sequential`` a ``lax.fori_loop`` over
    s = T−1 … 1, each a vector–Jacobian product with the cotangent at position s alone;
    ``jacobi`` a ``lax.while_loop`` of λ ← g + Jᵀλ until an iteration changes nothing."""
    import jax
    import jax.numpy as jnp

    length = g.shape[axis]
    shape = [1] * g.ndim
    shape[axis] = length
    position = jnp.arange(length).reshape(shape)
    if backward == "sequential":
        def sweep(i, lam):
            s = length - 1 - i
            return lam + vjp_x(jnp.where(position == s, lam, jnp.zeros_like(lam)))

        return jax.lax.fori_loop(0, length - 1, sweep, g)

    def iterate(state):
        k, lam, _ = state
        new = g + vjp_x(lam)
        return k + 1, new, jnp.all(new == lam)

    def going(state):
        k, _, done = state
        return (k < length - 1) & ~done

    return jax.lax.while_loop(going, iterate, (0, g, jnp.asarray(False)))[1]
