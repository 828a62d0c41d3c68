"""Gradients through ffsolve.solve_recurrence: the adjoint recurrence, three ways.

Every forward method × every backward method, for the built-in cells (softplus RNN, GRU, LSTM with
its (h, c) state), an nn.Module step and a user's plain callable with ``params=``, batch 1 and 3,
in float64, against autograd through the plain Python loop ``for t: s = step(s, u[t])``; in JAX
(a custom_vjp under an eager jax.grad) the same against jax.grad through the loop, within the
tolerance.

What is bitwise and why (the summation order is the same):
* ∂L/∂s0 and ∂L/∂u with ``backward="loop"`` or ``"jacobi"`` for the built-in cells (bit-stable
  steps, so the forward result and every per-row vector–Jacobian product are the loop's bits): λ_t
  is g_t + J_{t+1}ᵀ λ_{t+1}, the two-term sum autograd forms at s_t, and row t of the batched
  product is the loop's step-t product.
Within :func:`tolerance` (the summation order differs):
* the parameters' gradients always: autograd through the loop adds the T per-step contributions
  one after another, the batched product sums them in one reduction;
* ``backward="scan"``: the scan reassociates the sums of products of Jacobians;
* the plain callable: ``x @ W.T`` rounds differently on T·B rows than on B, so its forward result
  is the batched step's fixed point, within rounding of the loop.
"""

import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.recurrence import cells, grad, programs, solve_recurrence

T, H, D = 12, 4, 3
FORWARDS = ("sequential", "jacobi", "newton", "quasi_newton", "damped_newton")
BACKWARDS = ("loop", "jacobi", "scan")
EPS = float(np.finfo(np.float64).eps)
ULPS = 8.0


def tolerance(reference: torch.Tensor) -> float:
    """|got − reference| allowed elementwise: ULPS · T · eps · max(1, max |reference|).

    A sum of T terms reassociated changes by at most about (T − 1) · eps · Σ|terms| (Higham,
    ch. 4); the terms here (per-step gradient contributions, Jacobian-product chains of a
    contracting cell) are of the size of the largest gradient entry or smaller, so T · eps ·
    max|reference| with a factor ULPS = 8 for the few roundings inside each term. The largest
    difference seen in this file is within about 100× below it (checked in
    test_the_tolerance_is_tight_and_a_dropped_adjoint_fails_it)."""
    return ULPS * T * EPS * max(1.0, float(reference.abs().max()))


def _weights(kind, generator):
    def draw(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
                ).requires_grad_(True)

    if kind == "softplus":
        return (draw(H, H, scale=0.4 / math.sqrt(H)), draw(H, D), draw(H))
    gates = 3 if kind == "gru" else 4
    return (draw(gates * H, D, scale=0.5), draw(gates * H, H, scale=0.5 / math.sqrt(H)),
            draw(gates * H, scale=0.5), draw(gates * H, scale=0.5))


class _ModuleStep(torch.nn.Module):
    """A user's nn.Module step: solve_recurrence finds its parameters itself."""

    def __init__(self, generator):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(H, H, generator=generator, dtype=torch.float64)
                                    * 0.4 / math.sqrt(H))
        self.v = torch.nn.Parameter(torch.randn(H, D, generator=generator, dtype=torch.float64))
        self.tanh = cells.rowwise(torch.tanh)

    def forward(self, s, u):
        return self.tanh(cells.linear(s, self.w) + cells.linear(u, self.v))


def _case(kind, batch, seed=0):
    """(step for solve_recurrence, step for the reference loop, params, s0, u, bit_stable)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, H)
    if kind in ("softplus", "gru", "lstm"):
        weights = _weights(kind, g)
        cell = {"softplus": cells.softplus_rnn, "gru": cells.gru, "lstm": cells.lstm}[kind](
            *weights)
        step, loop_step, params, stable = cell, cell.step, weights, True
    elif kind == "module":
        step = loop_step = _ModuleStep(g)
        params, stable = tuple(step.parameters()), True
    else:  # a user's plain callable, closing over its weights: named with params=
        w = (torch.randn(H, H, generator=g, dtype=torch.float64) * 0.4 / math.sqrt(H)
             ).requires_grad_(True)
        v = torch.randn(H, D, generator=g, dtype=torch.float64).requires_grad_(True)

        def step(s, u):
            return torch.tanh(s @ w.T + u @ v.T)

        loop_step, params, stable = step, (w, v), False
    s0 = torch.randn(*shape, generator=g, dtype=torch.float64)
    if kind == "lstm":
        s0 = (s0.requires_grad_(True),
              torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True))
    else:
        s0 = s0.requires_grad_(True)
    u = torch.randn(T, batch, D, generator=g, dtype=torch.float64).requires_grad_(True)
    return step, loop_step, params, s0, u, stable


def _leaves(s0):
    return list(s0) if isinstance(s0, tuple) else [s0]


def _loss(x, seed=5):
    """A scalar loss that weighs every time step differently (so every g_t matters)."""
    states = list(x) if isinstance(x, tuple) else [x]
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for s in states:
        weights = torch.randn(s.shape, generator=g, dtype=s.dtype)
        total = total + (weights * s).sum() + 0.5 * (s * s).sum()
    return total


def _reference(loop_step, s0, u, wrt):
    """Autograd through the plain Python loop."""
    s, states = s0, []
    for t in range(u.shape[0]):
        s = loop_step(s, u[t])
        states.append(s)
    if isinstance(s0, tuple):
        x = tuple(torch.stack([st[k] for st in states]) for k in range(len(s0)))
    else:
        x = torch.stack(states)
    return torch.autograd.grad(_loss(x), wrt)


def _solve_grads(step, s0, u, wrt, method, backward, params=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ffsolve.NotBitwiseWarning)
        res = solve_recurrence(step, s0, u, method, backward=backward, params=params)
    assert res.converged
    return torch.autograd.grad(_loss(res.x), wrt)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["softplus", "gru", "lstm", "module", "callable"])
def test_gradients_equal_autograd_through_the_loop(kind, batch, backward):
    step, loop_step, params, s0, u, stable = _case(kind, batch)
    data = _leaves(s0) + [u]
    wrt = data + list(params)
    reference = _reference(loop_step, s0, u, wrt)
    explicit = params if kind == "callable" else None  # cells and modules declare their own
    for method in FORWARDS:
        got = _solve_grads(step, s0, u, wrt, method, backward, params=explicit)
        for k, (a, b) in enumerate(zip(got, reference)):
            assert a.shape == b.shape
            if stable and backward != "scan" and k < len(data):
                assert torch.equal(a, b), (method, k, float((a - b).abs().max()))
            else:
                assert float((a - b).abs().max()) <= tolerance(b), (method, k)


def test_the_tolerance_is_tight_and_a_dropped_adjoint_fails_it(monkeypatch):
    worst = 0.0  # the largest difference seen, as a share of the tolerance
    for kind in ("softplus", "gru", "lstm", "callable"):
        step, loop_step, params, s0, u, _ = _case(kind, 3, seed=1)
        wrt = _leaves(s0) + [u] + list(params)
        explicit = params if kind == "callable" else None
        reference = _reference(loop_step, s0, u, wrt)
        for backward in BACKWARDS:
            got = _solve_grads(step, s0, u, wrt, "newton", backward, params=explicit)
            worst = max(worst, max(float((a - b).abs().max()) / tolerance(b)
                                   for a, b in zip(got, reference)))
        # A deliberately wrong backward: one time step's adjoint loses its propagated part
        # (λ_t = g_t instead of g_t + J_{t+1}ᵀ λ_{t+1}).
        right = grad.adjoint

        def dropped(backward, g, right=right, **kw):
            lam = right(backward, g, **kw).clone()
            lam[T // 2] = g[T // 2]
            return lam

        with monkeypatch.context() as patch:
            patch.setattr(grad, "adjoint", dropped)
            for backward in BACKWARDS:
                wrong = _solve_grads(step, s0, u, wrt, "jacobi", backward, params=explicit)
                assert any(float((a - b).abs().max()) > tolerance(b)
                           for a, b in zip(wrong, reference)), (kind, backward)
    print(f"largest difference: {worst:.3g} of the tolerance")
    assert 0.0 < worst <= 1.0
    assert worst >= 1 / 200, f"the tolerance is far above the differences seen ({worst:.2g})"


@pytest.mark.parametrize("backward", BACKWARDS)
def test_gradcheck(backward):
    g = torch.Generator().manual_seed(3)
    n_t, batch, hidden, inputs = 5, 2, 3, 2
    w = (0.5 * torch.randn(hidden, hidden, generator=g, dtype=torch.float64)).requires_grad_()
    v = torch.randn(hidden, inputs, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(hidden, generator=g, dtype=torch.float64, requires_grad=True)
    s0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.randn(n_t, batch, inputs, generator=g, dtype=torch.float64, requires_grad=True)

    def solved(s0, u, w, v, b):  # the Cell declares w, v, b as its parameters
        return solve_recurrence(cells.softplus_rnn(w, v, b), s0, u, "newton",
                                backward=backward).x

    assert torch.autograd.gradcheck(solved, (s0, u, w, v, b))

    def gru_solved(s0, u, w):  # a plain callable, batch first, with params=
        return solve_recurrence(lambda s, x: torch.tanh(s @ w.T + x.sum(-1, keepdim=True)),
                                s0, u, "jacobi", params=[w], backward=backward,
                                time_axis=1).x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ffsolve.NotBitwiseWarning)
        assert torch.autograd.gradcheck(gru_solved, (s0, u.transpose(0, 1).detach()
                                                     .requires_grad_(), w))


def test_undeclared_weights_are_refused_and_declared_ones_work():
    g = torch.Generator().manual_seed(4)
    raw = torch.randn(H, H, generator=g, dtype=torch.float64, requires_grad=True)
    w = 0.3 * raw * raw.detach().abs()  # not a leaf: its graph must survive the solve's backward
    s0 = torch.zeros(2, H, dtype=torch.float64)
    u = torch.randn(T, 2, H, generator=g, dtype=torch.float64)

    def step(s, x):
        return torch.tanh(s @ w.T + x)

    with pytest.raises(RuntimeError, match=r"not among its parameters.*params=\[\.\.\.\]"):
        solve_recurrence(step, s0, u)
    s, total = s0, 0.0
    for t in range(T):
        s = step(s, u[t])
        total = total + s.sum()
    expected = torch.autograd.grad(total + (w * w).sum(), raw, retain_graph=True)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ffsolve.NotBitwiseWarning)
        res = solve_recurrence(step, s0, u, params=[w], backward="jacobi")
    (res.x.sum() + (w * w).sum()).backward()  # w's own graph is still there
    assert float((raw.grad - expected).abs().max()) <= tolerance(expected)
    with torch.no_grad(), warnings.catch_warnings():  # a forward solve needs no declaration
        warnings.simplefilter("ignore", ffsolve.NotBitwiseWarning)
        assert not solve_recurrence(step, s0, u).x.requires_grad


def test_what_cannot_be_differentiated_says_so():
    g = torch.Generator().manual_seed(5)
    cell = cells.softplus_rnn(*_weights("softplus", g))
    s0, u = torch.zeros(1, H, dtype=torch.float64), torch.randn(T, 1, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="backward must be one of"):
        solve_recurrence(cell, s0, u, backward="reverse")
    with pytest.raises(ValueError, match="method='auto' takes no params or backward"):
        solve_recurrence(cell, s0, u, "auto", backward="scan")
    with pytest.raises(ValueError, match="PyTorch-only"):
        solve_recurrence(cell.step, s0.numpy(), u.numpy(), params=[])
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    w = jnp.asarray(np.eye(H) * 0.5)
    s0_j, u_j = jnp.zeros((1, H)), jnp.ones((T, 1, H))

    def solved(w):
        return solve_recurrence(lambda s, x: jnp.tanh(s @ w.T + x), s0_j, u_j).x

    with pytest.raises(TypeError, match="cannot run under jax.jit or jax.vmap"):
        jax.jit(jax.grad(lambda w: solved(w).sum()))(w)
    with pytest.raises(TypeError, match="cannot run under jax.jit or jax.vmap"):
        jax.vmap(solved)(jnp.stack([w, w]))


# ------------------------------------------------------------------------------------- JAX

JAX_KINDS = {"softplus": 3, "gru": 1, "lstm": 3, "callable": 1}  # kind: batch


def _jax_case(kind, batch, jnp, seed=0):
    """(make_step(weights) -> step, weights, s0, u) in float64 JAX arrays."""
    g = torch.Generator().manual_seed(seed)
    if kind == "callable":
        weights = (torch.randn(H, H, generator=g, dtype=torch.float64) * 0.4 / math.sqrt(H),
                   torch.randn(H, D, generator=g, dtype=torch.float64))

        def make(w, v):
            return lambda s, x: jnp.tanh(s @ w.T + x @ v.T)
    else:
        weights = _weights(kind, g)
        make = {"softplus": cells.softplus_rnn, "gru": cells.gru, "lstm": cells.lstm}[kind]
    weights = tuple(jnp.asarray(w.detach().numpy()) for w in weights)
    s0 = jnp.asarray(torch.randn(batch, H, generator=g, dtype=torch.float64).numpy())
    if kind == "lstm":
        s0 = (s0, jnp.asarray(torch.randn(batch, H, generator=g, dtype=torch.float64).numpy()))
    u = jnp.asarray(torch.randn(T, batch, D, generator=g, dtype=torch.float64).numpy())
    return make, weights, s0, u


def _jax_loss(x, jnp):
    states = list(x) if isinstance(x, tuple) else [x]
    rng = np.random.default_rng(5)
    return sum((jnp.asarray(rng.standard_normal(s.shape)) * s).sum() + 0.5 * (s * s).sum()
               for s in states)


@pytest.mark.parametrize("kind", list(JAX_KINDS))
def test_jax_gradients_equal_jax_grad_through_the_loop(kind, monkeypatch):
    """JAX: jax.grad through solve_recurrence (a custom_vjp) against jax.grad through the Python
    loop, float64, within :func:`tolerance` (XLA fuses the batched and one-step programs
    differently, so no bitwise claim). The softplus cell runs every forward × backward pair and a
    deliberately wrong backward; the others each backward once (compiling dominates here)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ffsolve.NotBitwiseWarning)
        make, weights, s0, u = _jax_case(kind, JAX_KINDS[kind], jnp)

        def loop(s0, u, weights):
            step, s, states = make(*weights), s0, []
            for t in range(T):
                s = step(s, u[t])
                states.append(s)
            if isinstance(s0, tuple):
                return _jax_loss(tuple(jnp.stack([st[k] for st in states]) for k in range(2)),
                                 jnp)
            return _jax_loss(jnp.stack(states), jnp)

        def solved(method, backward):
            def loss(s0, u, weights):
                return _jax_loss(solve_recurrence(make(*weights), s0, u, method,
                                                  backward=backward).x, jnp)

            return jax.grad(loss, argnums=(0, 1, 2))(s0, u, weights)

        reference = jax.tree_util.tree_leaves(jax.grad(loop, argnums=(0, 1, 2))(s0, u, weights))
        if kind == "softplus":
            pairs = [(m, b) for m in FORWARDS for b in BACKWARDS]
        else:
            pairs = [("sequential", "loop"), ("newton", "jacobi"), ("quasi_newton", "scan")]
        for method, backward in pairs:
            got = jax.tree_util.tree_leaves(solved(method, backward))
            for a, b in zip(got, reference):
                ref = torch.from_numpy(np.array(b))
                diff = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                assert diff <= tolerance(ref), (method, backward, diff)
        if kind == "softplus":
            right = grad._jax_adjoint

            def dropped(backward, g, right=right, **kw):
                return right(backward, g, **kw).at[T // 2].set(g[T // 2])

            monkeypatch.setattr(grad, "_jax_adjoint", dropped)
            # compiled backward programs are cached: compile the wrong one afresh
            monkeypatch.setattr(programs, "_PROGRAMS", OrderedDict())
            for backward in BACKWARDS:
                wrong = jax.tree_util.tree_leaves(solved("jacobi", backward))
                assert any(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                           > tolerance(torch.from_numpy(np.array(b)))
                           for a, b in zip(wrong, reference)), backward


def test_the_public_api():
    assert ffsolve.available_recurrence_backwards() == list(BACKWARDS)
    assert cells.gru(*_weights("gru", torch.Generator().manual_seed(0))).parameters[1].shape \
        == (3 * H, H)


def test_auto_differentiates_a_cell():
    step, loop_step, params, s0, u, _ = _case("gru", 2, seed=6)
    wrt = [s0, u] + list(params)
    reference = _reference(loop_step, s0, u, wrt)
    res = solve_recurrence(step, s0, u, "auto")
    got = torch.autograd.grad(_loss(res.x), wrt)
    for a, b in zip(got, reference):
        assert float((a - b).abs().max()) <= tolerance(b)
