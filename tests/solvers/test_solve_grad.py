"""Gradients through ffsolve.solve: the adjoint of the triangular system, two ways.

Every forward method (``jacobi_gs`` and ``gs_jacobi`` at a block size that does not divide T) ×
every backward method, for a causal MADE-like masked MLP (an nn.Module sampler, batch first,
``axis=1``: solve finds its parameters itself) and a plain function with ``params=`` (time first,
``axis=0``), in float64, against autograd through the plain sequential evaluation
(``for t: y = f(x); x = x.clone(); x[t] = y[t]``).

What is bitwise and why (the summation order is the same):
* the forward result, at ``tol=0``, for every method (the solver's promise);
* with ``backward="sequential"``, the adjoint λ = dL/dx*: autograd through the evaluation adds,
  at position t, g_t and then output s's part for s = T−1, …, t+1 one after another, each part a
  vector–Jacobian product of f with one position's cotangent; the sweep forms the same products
  (at x*, where they read the same bits: f's output s reads positions < s only) and adds them in
  the same order. It is seen directly in the gradient of the plain function's additive noise z
  (∂L/∂z = λ).
Within :func:`tolerance` (the summation order differs):
* the weights' gradients always: autograd through the evaluation adds the T per-call parts one
  after another, the one vector–Jacobian product at x* sums them in one reduction;
* ``backward="jacobi"``: λ_t sums the parts of every later position in one reduction.
"""

import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.solvers import grad as solve_grad
from ffsolve.solvers.arrays import index_along

T, B, HIDDEN = 10, 3, 12
BLOCK = 3  # does not divide T
FORWARDS = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs")
BACKWARDS = ("sequential", "jacobi")
EPS = float(np.finfo(np.float64).eps)
ULPS = 8.0


def tolerance(reference: torch.Tensor) -> float:
    """|got − reference| allowed elementwise: ULPS · T · eps · max(1, max |reference|).

    A sum of T terms reassociated changes by at most about (T − 1) · eps · Σ|terms| (Higham,
    ch. 4); the terms here (a weight's per-position parts, the parts of λ_t from later positions
    through a contracting map) are of the size of the largest gradient entry or smaller, so
    T · eps · max|reference|, with a factor ULPS = 8 for the few roundings inside each term (the
    same rule as tests/recurrence/test_recurrence_grad.py). The largest difference seen here is within
    200× below it, and a backward that drops one position's adjoint fails it (both checked in
    test_the_tolerance_is_tight_and_a_dropped_adjoint_fails_it)."""
    return ULPS * T * EPS * max(1.0, float(reference.abs().max()))


class MadeSampler(torch.nn.Module):
    """A MADE-like masked MLP sampler: x_t = μ_t(x_<t) + exp(α_t(x_<t)) z_t, one hidden layer
    whose units have degrees 1..T−1 (unit k reads inputs of degree <= m_k; output t reads units
    with m_k < t + 1, i.e. inputs < t). Causal along axis 1 of (batch, T)."""

    def __init__(self, generator):
        super().__init__()
        degrees = torch.arange(HIDDEN) % (T - 1) + 1  # 1..T-1
        inputs = torch.arange(T) + 1  # input d has degree d + 1
        self.register_buffer("m1", (degrees[:, None] >= inputs[None, :]).double())
        self.register_buffer("m2", (inputs[:, None] > degrees[None, :]).double())

        def draw(*shape, scale):
            return torch.nn.Parameter(
                scale * torch.randn(*shape, generator=generator, dtype=torch.float64))

        self.w1 = draw(HIDDEN, T, scale=1 / math.sqrt(T))
        self.b1 = draw(HIDDEN, scale=0.5)
        self.w_mu = draw(T, HIDDEN, scale=1 / math.sqrt(HIDDEN))
        self.w_alpha = draw(T, HIDDEN, scale=0.3 / math.sqrt(HIDDEN))
        self.b_mu = draw(T, scale=0.5)
        self.register_buffer("z", torch.randn(B, T, generator=generator, dtype=torch.float64))

    def forward(self, x):
        h = torch.tanh(x @ (self.w1 * self.m1).T + self.b1)
        mu = h @ (self.w_mu * self.m2).T + self.b_mu
        alpha = h @ (self.w_alpha * self.m2).T
        return mu + torch.exp(alpha) * self.z


def _case(kind, seed=0):
    """(f, params for solve (None: found by solve), tensors to differentiate, x0, axis)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "made":
        f = MadeSampler(g)
        return f, None, list(f.parameters()), torch.zeros(B, T, dtype=torch.float64), 1
    w = (torch.randn(T, T, generator=g, dtype=torch.float64) / math.sqrt(T)).requires_grad_()
    b = torch.randn(T, 1, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(T, B, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x):
        return torch.tanh(torch.tril(w, -1) @ x + b) + z

    return f, [w, b, z], [w, b, z], torch.zeros(T, B, dtype=torch.float64), 0


def _loss(x):
    c = torch.from_numpy(np.random.default_rng(7).standard_normal(tuple(x.shape)))
    return (c * x).sum() + 0.5 * (x * x).sum()


def sequential_reference(f, x0, axis):
    """The plain sequential evaluation, position by position, as autograd sees it."""
    x = x0
    for t in range(x0.shape[axis]):
        y = f(x)
        at = index_along(axis, x.ndim, slice(t, t + 1))
        x = x.clone()
        x[at] = y[at]
    return x


def _reference(kind, seed=0):
    f, _, wrt, x0, axis = _case(kind, seed)
    x = sequential_reference(f, x0, axis)
    return x.detach(), torch.autograd.grad(_loss(x), wrt)


def _solve_grads(kind, method, backward, seed=0):
    f, params, wrt, x0, axis = _case(kind, seed)
    block = BLOCK if ffsolve.uses_blocks(method) else None
    res = ffsolve.solve(f, x0, method, block_size=block, axis=axis, params=params,
                        backward=backward)
    assert res.converged and res.x.requires_grad
    return res.x.detach(), torch.autograd.grad(_loss(res.x), wrt)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("kind", ["made", "function"])
def test_gradients_equal_autograd_through_the_sequential_evaluation(kind, backward):
    ref_x, reference = _reference(kind)
    for method in FORWARDS:
        x, got = _solve_grads(kind, method, backward)
        assert torch.equal(x, ref_x), method
        for k, (a, b) in enumerate(zip(got, reference)):
            assert a.shape == b.shape
            assert float((a - b).abs().max()) <= tolerance(b), (method, k)
        if kind == "function" and backward == "sequential":  # ∂L/∂z = λ: the same bits
            assert torch.equal(got[2], reference[2]), (method, float((got[2] - reference[2])
                                                                     .abs().max()))


def test_the_tolerance_is_tight_and_a_dropped_adjoint_fails_it(monkeypatch):
    worst = 0.0  # the largest difference seen, as a share of the tolerance
    for kind in ("made", "function"):
        _, reference = _reference(kind, seed=1)
        for backward in BACKWARDS:
            got = _solve_grads(kind, "jacobi", backward, seed=1)[1]
            worst = max(worst, max(float((a - b).abs().max()) / tolerance(b)
                                   for a, b in zip(got, reference)))
        # A deliberately wrong backward: one position's adjoint loses its propagated part
        # (λ_t = g_t instead of g_t + Σ_{s>t} J_stᵀ λ_s).
        right = solve_grad.adjoint

        def dropped(backward, g, *, axis, right=right, **kw):
            lam = right(backward, g, axis=axis, **kw).clone()
            at = index_along(axis, g.ndim, slice(T // 2, T // 2 + 1))
            lam[at] = g[at]
            return lam

        with monkeypatch.context() as patch:
            patch.setattr(solve_grad, "adjoint", dropped)
            for backward in BACKWARDS:
                wrong = _solve_grads(kind, "jacobi", backward, seed=1)[1]
                assert any(float((a - b).abs().max()) > tolerance(b)
                           for a, b in zip(wrong, reference)), (kind, backward)
    print(f"largest difference: {worst:.3g} of the tolerance")
    assert 0.0 < worst <= 1.0
    assert worst >= 1 / 200, f"the tolerance is far above the differences seen ({worst:.2g})"


@pytest.mark.parametrize("backward", BACKWARDS)
def test_gradcheck(backward):
    g = torch.Generator().manual_seed(3)
    n = 5
    w = (torch.randn(n, n, generator=g, dtype=torch.float64) / 2).requires_grad_()
    b = torch.randn(n, 1, generator=g, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64, requires_grad=True)

    def solved(x0, w, b):  # x0's gradient is zero: the fixed point does not depend on it
        f = lambda x: torch.tanh(torch.tril(w, -1) @ x + b) * 1.5  # noqa: E731
        return ffsolve.solve(f, x0, "jacobi_gs", block_size=2, params=[w, b],
                             backward=backward).x

    assert torch.autograd.gradcheck(solved, (x0, w, b))
    assert torch.equal(torch.autograd.grad(solved(x0, w, b).sum(), x0)[0], torch.zeros_like(x0))


def test_module_parameters_are_found_and_undeclared_tensors_refused():
    f, _, wrt, x0, axis = _case("made")
    res = ffsolve.solve(f, x0, "jacobi", axis=axis)  # the module's parameters, by default
    _loss(res.x).backward()
    assert all(p.grad is not None for p in f.parameters())
    g = torch.Generator().manual_seed(4)
    w = torch.randn(T, T, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(T, 1, generator=g, dtype=torch.float64, requires_grad=True)
    f2 = lambda x: torch.tanh(torch.tril(w, -1) @ x + v)  # noqa: E731
    x0 = torch.zeros(T, B, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"does not propagate gradients yet.*1 tensor\(s\)"):
        ffsolve.solve(f2, x0, "jacobi", params=[w])  # v undeclared, w declared
    with pytest.raises(RuntimeError, match="does not propagate gradients yet"):
        ffsolve.solve(f2, x0, "jacobi")  # nothing declared
    with torch.no_grad():
        assert ffsolve.solve(f2, x0, "jacobi").converged
    res = ffsolve.solve(f2, x0, "gs_jacobi", params=[w, v], backward="jacobi")
    assert res.x.requires_grad


def test_what_cannot_be_differentiated_says_so():
    f, params, _, x0, _ = _case("function")
    with pytest.raises(ValueError, match="backward must be one of"):
        ffsolve.solve(f, x0, backward="reverse")
    with pytest.raises(ValueError, match="method='auto' takes no params or backward"):
        ffsolve.solve(f, x0, "auto", backward="jacobi")
    with pytest.raises(ValueError, match="PyTorch-only"):
        ffsolve.solve(lambda x: x, np.zeros((T, B)), params=[])
    res = ffsolve.solve(f, x0, params=params)
    with pytest.raises(RuntimeError, match="differentiable once.*second derivatives"):
        torch.autograd.grad(_loss(res.x), params[0], create_graph=True)
    assert ffsolve.available_backwards() == list(BACKWARDS)


# ------------------------------------------------------------------------------------- JAX


def _jax_case(kind, jnp):
    """(make(weights) -> f, weights, x0, axis) in float64 JAX arrays: the same two maps."""
    f, _, wrt, x0, axis = _case(kind)
    weights = tuple(jnp.asarray(w.detach().numpy()) for w in wrt)
    if kind == "function":
        def make(w, b, z):
            return lambda x: jnp.tanh(jnp.tril(w, -1) @ x + b) + z
    else:
        m1, m2, noise = (jnp.asarray(a.numpy()) for a in (f.m1, f.m2, f.z))

        def make(w1, b1, w_mu, w_alpha, b_mu):
            def sample(x):
                h = jnp.tanh(x @ (w1 * m1).T + b1)
                return h @ (w_mu * m2).T + b_mu + jnp.exp(h @ (w_alpha * m2).T) * noise

            return sample
    return make, weights, jnp.asarray(x0.numpy()), axis


def test_jax_gradients_equal_jax_grad_through_the_sequential_evaluation(monkeypatch):
    """JAX: jax.grad through solve (a custom_vjp of the arrays f closes over) against jax.grad
    through the sequential evaluation, float64, within :func:`tolerance` (the backward is one
    compiled program, which XLA may fuse unlike the eager reference: no bitwise claim). Every
    forward × backward pair on the plain function, each backward on the MADE-like map, x0's
    gradient zero, and a deliberately wrong backward fails the tolerance."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True):
        for kind in ("function", "made"):
            make, weights, x0, axis = _jax_case(kind, jnp)
            c = jnp.asarray(np.random.default_rng(7).standard_normal(tuple(x0.shape)))

            def loss_of(x, c=c):
                return (c * x).sum() + 0.5 * (x * x).sum()

            def evaluation(weights, make=make, x0=x0, axis=axis, loss_of=loss_of):
                f, x = make(*weights), x0
                for t in range(x0.shape[axis]):
                    at = index_along(axis, x.ndim, slice(t, t + 1))
                    x = x.at[at].set(f(x)[at])
                return loss_of(x)

            def solved(method, backward, make=make, x0=x0, axis=axis, loss_of=loss_of):
                block = BLOCK if ffsolve.uses_blocks(method) else None

                def loss(weights, x0):
                    return loss_of(ffsolve.solve(make(*weights), x0, method, block_size=block,
                                                 axis=axis, backward=backward).x)

                return jax.grad(loss, argnums=(0, 1))(weights, x0)

            reference = jax.grad(evaluation)(weights)
            pairs = ([(m, b) for m in FORWARDS for b in BACKWARDS] if kind == "function"
                     else [("jacobi_gs", "sequential"), ("gs_jacobi", "jacobi")])
            for method, backward in pairs:
                got, got_x0 = solved(method, backward)
                assert not np.any(np.asarray(got_x0))
                for a, b in zip(got, reference):
                    diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    assert diff <= tolerance(torch.from_numpy(np.array(b))), (
                        kind, method, backward, diff)
        right = solve_grad._jax_adjoint

        def dropped(backward, g, vjp_x, axis, right=right):
            at = index_along(axis, g.ndim, slice(T // 2, T // 2 + 1))
            return right(backward, g, vjp_x, axis).at[at].set(g[at])

        monkeypatch.setattr(solve_grad, "_jax_adjoint", dropped)
        # compiled backward programs are cached: compile the wrong one afresh
        from ffsolve.recurrence import programs

        monkeypatch.setattr(programs, "_PROGRAMS", OrderedDict())
        for backward in BACKWARDS:
            wrong = solved("jacobi", backward)[0]
            assert any(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                       > tolerance(torch.from_numpy(np.array(b)))
                       for a, b in zip(wrong, reference)), backward


def test_jax_transformations_run_the_compiled_driver_and_a_second_derivative_says_so():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    w = jnp.asarray(np.eye(T) * 0.5 + np.tri(T, k=-1) * 0.3, dtype=jnp.float32)

    def solved(w, x0=jnp.zeros((T, B))):
        return ffsolve.solve(lambda x: jnp.tanh(jnp.tril(w, -1) @ x) + 1, x0).x

    eager = jax.grad(lambda w: solved(w).sum())(w)
    jitted = jax.jit(jax.grad(lambda w: solved(w).sum()))(w)  # the compiled forward, then
    assert float(jnp.max(jnp.abs(eager))) > 0  # the same adjoint program
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)
    # (bit for bit only against a jitted f: tests/solvers/test_solve_jit.py; this f runs op by op)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x0: solved(w, x0))(jnp.zeros((T, B)))),
                               np.asarray(solved(w)), rtol=1e-6)
    lanes = jax.vmap(solved)(jnp.stack([w, 0.5 * w]))
    np.testing.assert_allclose(np.asarray(lanes[1]), np.asarray(solved(0.5 * w)), rtol=1e-6)
    message = "cannot run inside a second derivative"
    with pytest.raises(TypeError, match=message):
        jax.grad(lambda w: jax.grad(lambda v: solved(v).sum())(w).sum())(w)
    with pytest.raises(TypeError, match=message):
        jax.jit(jax.grad(lambda w: jax.grad(lambda v: solved(v).sum())(w).sum()))(w)
    with pytest.raises(ValueError, match="PyTorch-only"):
        ffsolve.solve(lambda x: x, jnp.zeros(3), params=[w])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert solved(w).shape == (T, B)  # without a transformation: the plain solve


def test_auto_differentiates_a_module():
    _, reference = _reference("made", seed=6)
    f, _, wrt, x0, axis = _case("made", seed=6)
    res = ffsolve.solve(f, x0, "auto", axis=axis)  # the module's parameters, backward sequential
    got = torch.autograd.grad(_loss(res.x), wrt)
    for a, b in zip(got, reference):
        assert float((a - b).abs().max()) <= tolerance(b), res.method


def test_the_sequential_adjoint_is_bitwise_when_f_reads_x_twice():
    """Autograd through the evaluation adds, at x, the copy's part first and then f's two uses'
    parts; the sweep's ``first`` enters the same sum first (grad.differentiable_solve's alias)."""
    g = torch.Generator().manual_seed(2)
    w, v = ((torch.randn(T, T, generator=g, dtype=torch.float64) / math.sqrt(T)).requires_grad_()
            for _ in range(2))
    z = torch.randn(T, B, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x):
        return torch.tanh(torch.tril(w, -1) @ x) + 0.3 * torch.sin(torch.tril(v, -1) @ x) + z

    x0 = torch.zeros(T, B, dtype=torch.float64)
    reference = torch.autograd.grad(_loss(sequential_reference(f, x0, 0)), z)[0]
    for method in FORWARDS:
        block = BLOCK if ffsolve.uses_blocks(method) else None
        res = ffsolve.solve(f, x0, method, block_size=block, params=[w, v, z])
        assert torch.equal(torch.autograd.grad(_loss(res.x), z)[0], reference), method
