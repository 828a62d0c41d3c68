"""Built-in recurrent cells for :func:`ffsolve.solve_recurrence`, in PyTorch and in JAX.

Each constructor returns a :class:`Cell`: ``step(s_prev, u) -> s`` plus analytic Jacobians with
respect to the state, ``jacobian(s_prev, u) -> (..., H, H)`` (``J[i, j] = ∂s_i/∂s_prev_j``) and
``diagonal(s_prev, u) -> (..., H)``. The framework follows the weights' array type.

Bit-stable shapes: ``solve_recurrence``'s loop calls ``step`` on the user's ``(*batch, H)``
states one time step at a time; its parallel methods call it on every time step at once, the
leading axes folded into one batch axis, ``(T·B, H)``. A plain ``x @ W.T`` then runs with
T·B rows instead of B, and on CPU the kernel (and so the rounding of each row) depends on the
number of rows: PyTorch differs in the last bits between 1 row and many, and for large K between
many and more (measured here: 31 of 147 shapes), XLA for most shapes. The cells compute their
products with :func:`linear` (each time step's B rows their own ``(B, K) @ (K, N)`` product of
one batched call, as :func:`row_group` tells it) and their
elementwise functions through :func:`rowwise`;
that makes the parallel methods' Jacobi fixed point the loop's result bit for bit in PyTorch
(every shape tried). XLA may still compile the loop's scan differently from the batched call;
``solve_recurrence`` then says so (``loop_bitwise``). Write your own ``step`` the same way if you
want ``tol=0`` to mean bitwise, and check it with :func:`ffsolve.recurrence.check_step`.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any


@dataclass(frozen=True, eq=False)
class Cell:
    """A recurrence step with its analytic state Jacobians.

    Attributes:
        step: ``step(s_prev (..., H), u (..., D)) -> s (..., H)``.
        jacobian: ``(s_prev, u) -> (..., H, H)``, the full Jacobian ∂s/∂s_prev.
        diagonal: ``(s_prev, u) -> (..., H)``, its diagonal.
        hidden_size, input_size: H and D.
        full_cost, diagonal_cost: the work of one Jacobian evaluation over the sequence, in full
            passes of ``step`` (the unit of ``network_evaluations``), derived per cell below.
        name: ``"gru"``, ``"lstm"`` or ``"softplus_rnn"``.
        parameters: the weight arrays the cell was built from, in its constructor's order:
            in PyTorch, :func:`ffsolve.solve_recurrence` propagates gradients to those that
            require grad (see its ``params`` argument).
    """

    step: Callable
    jacobian: Callable
    diagonal: Callable
    hidden_size: int
    input_size: int
    full_cost: float
    diagonal_cost: float
    name: str
    parameters: tuple = ()

    def __call__(self, s_prev, u):
        return self.step(s_prev, u)

    @property
    def full(self) -> Callable:
        """The full Jacobian (same as :attr:`jacobian`; the name ``solve_recurrence`` looks for)."""
        return self.jacobian


# --------------------------------------------------------------------------- per-framework ops


def _is_torch(a) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(a, torch.Tensor)


_ROW_GROUP: ContextVar[int | None] = ContextVar("ffsolve_row_group", default=None)


@contextlib.contextmanager
def row_group(rows: int):
    """Within this block :func:`linear` computes its rows in groups of ``rows``: each group one
    ``(rows, K) @ (K, N)`` product of one batched call. ``solve_recurrence`` sets it to the
    batch size B of the user's loop, whose step sees B rows per call and the parallel methods'
    T·B: every time step is then the same product in both, bit for bit, and far faster than one
    product per row."""
    token = _ROW_GROUP.set(int(rows))
    try:
        yield
    finally:
        _ROW_GROUP.reset(token)


# JAX products over at most this many input features run as K multiply-adds in order (below).
UNROLLED_MAX_K = 256


def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """``x @ weight.T + bias`` over ``x (..., K)``, computed so that a row's bits do not depend on
    how many rows there are (a plain product's kernel does; see the module docstring): in one
    batched call, each group of rows its own product: in PyTorch the groups of :func:`row_group`
    (``solve_recurrence`` sets it to the loop's batch), or all rows as one group outside it (a
    call of the user's own loop is one time step); in JAX, K multiply-adds in the order of the
    features (elementwise, the same for every row) up to ``UNROLLED_MAX_K`` features, one row per
    product above (slow on CPU for many rows).
    """
    k, n_out = weight.shape[1], weight.shape[0]
    if x.shape[-1] != k:
        raise ValueError(f"linear: input has {x.shape[-1]} features, the weight expects {k}")
    lead = tuple(x.shape[:-1])
    rows = math.prod(lead)
    group = _ROW_GROUP.get()
    if group is None:
        group = rows  # a call outside a solver is one time step of the user's loop: one group
    # Groups in PyTorch only: XLA simplifies a product whose batch is one group (the loop's) into
    # a plain one and rounds it differently from the batched call; in JAX the K multiply-adds
    # below (or, above UNROLLED_MAX_K features, one row per product) need no groups.
    group = group if group and rows % group == 0 and _is_torch(x) else 1
    n = rows // group
    if _is_torch(x):
        import torch

        y = torch.bmm(x.reshape(n, group, k), weight.t().expand(n, k, n_out)).reshape(
            *lead, n_out)
    elif k <= UNROLLED_MAX_K:
        # One multiply-add per input feature, in order: an elementwise program whose rounding of
        # a row does not depend on how many rows there are (no matrix kernel to choose; tested in
        # tests/recurrence/test_recurrence.py), and far cheaper on CPU than T·B one-row products
        # (benchmarks/sliding_benchmark.py times the JAX Jacobi solves).
        y = x[..., 0:1] * weight[:, 0]
        for i in range(1, k):
            y = y + x[..., i:i + 1] * weight[:, i]
    else:  # one row per product: the unrolled program grows with K (its compile, and at K 512 its time)
        import jax.numpy as jnp
        from jax import lax

        x3 = jnp.reshape(x, (n, group, k))
        wt = jnp.broadcast_to(jnp.transpose(weight), (n, k, n_out))
        y = lax.dot_general(x3, wt, (((2,), (1,)), ((0,), (0,)))).reshape(lead + (n_out,))
    return y if bias is None else y + bias


def rowwise(fn):
    """``fn`` (elementwise, PyTorch) applied so that each row (a position of the leading axes)
    is computed the same way whatever the number of rows.

    PyTorch's CPU kernels run transcendental functions (tanh, sigmoid, exp) in SIMD over the
    contiguous run of the tensor and finish its last few elements with the scalar routine, whose
    last bit can differ. On a contiguous ``(rows, H)`` tensor the run is the whole tensor, so the
    elements of a row would be SIMD in a many-row call and partly scalar in a one-row call.
    Viewing each row's H values with a stride one longer makes every row its own run, split into
    SIMD body and scalar tail identically for every row. Use it in your own step, e.g.
    ``tanh = cells.rowwise(torch.tanh)``, with :func:`linear` for its products. (Checked bitwise on
    one and on two compute threads, T up to 3,000; PyTorch could in principle cut a large tensor
    into per-thread chunks mid-run. The solvers would then still stop, at the batched map's own
    fixed point, within rounding of the loop.)
    """
    import torch

    def per_row(x):
        flat = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        return fn(torch.nn.functional.pad(flat, (0, 1))[:, :-1]).reshape(x.shape)

    return per_row


_rowwise = rowwise  # the name earlier versions used


class _Ops:
    """The few elementwise functions the cells need, per framework."""

    def __init__(self, like):
        if _is_torch(like):
            import torch

            self.sigmoid, self.tanh = rowwise(torch.sigmoid), rowwise(torch.tanh)
            self.softplus = rowwise(torch.nn.functional.softplus)
            self.diag = lambda w: torch.diagonal(w)
            self.eye_like = lambda v: torch.diag_embed(v)
            self.cat = torch.cat
        else:
            import jax
            import jax.numpy as jnp

            self.sigmoid, self.tanh = jax.nn.sigmoid, jnp.tanh
            self.softplus = jax.nn.softplus
            self.diag = jnp.diagonal
            self.eye_like = lambda v: v[..., :, None] * jnp.eye(v.shape[-1], dtype=v.dtype)
            self.cat = jnp.concatenate


def _shape_of(name: str, a, shape: tuple) -> None:
    if tuple(a.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(a.shape)}")


def _gated_sizes(gates: int, weight_ih, weight_hh, bias_ih, bias_hh) -> tuple[int, int]:
    """(H, D) of a gated cell in ``torch.nn``'s layout (``gates`` blocks of H rows), checked."""
    rows, d = weight_ih.shape
    if rows % gates:
        raise ValueError(f"weight_ih must have {gates}H rows, got {rows}")
    h = rows // gates
    _shape_of("weight_hh", weight_hh, (gates * h, h))
    _shape_of("bias_ih", bias_ih, (gates * h,))
    _shape_of("bias_hh", bias_hh, (gates * h,))
    return h, d


# ------------------------------------------------------------------------------------------ GRU


def gru(weight_ih: Array, weight_hh: Array, bias_ih: Array, bias_hh: Array) -> Cell:
    """A GRU cell with ``torch.nn.GRU``'s parameter layout and equations (gate order r, z, n):

        r = σ(W_ir u + b_ir + W_hr h + b_hr),   z = σ(W_iz u + b_iz + W_hz h + b_hz),
        n = tanh(W_in u + b_in + r ⊙ (W_hn h + b_hn)),   h' = (1 − z) ⊙ n + z ⊙ h.

    ``weight_ih (3H, D)``, ``weight_hh (3H, H)``, ``bias_ih (3H,)``, ``bias_hh (3H,)``: pass
    ``gru.weight_ih_l0`` etc. of a trained ``nn.GRU`` (as they are to train through
    ``solve_recurrence``, which then finds them in :attr:`Cell.parameters`; detached, or under
    ``torch.no_grad()``, for a forward solve), or JAX arrays of the same layout.

    Analytic Jacobian (rows scaled by vectors):
    ∂h'/∂h = diag(z) + diag((1−z)(1−n²) r) W_hn + diag((1−z)(1−n²)(W_hn h + b_hn) r(1−r)) W_hr
    + diag((h − n) z(1−z)) W_hz. Its cost: the gates once more (one pass of ``step``) plus three
    row-scaled H×H matrices summed, about 4H² multiply-adds per position against the step's
    3H(D + H): counted as ``full_cost = 1 + 4H / (3(D + H))`` passes; the diagonal needs only the
    gates: ``diagonal_cost = 1``.
    """
    h, d = _gated_sizes(3, weight_ih, weight_hh, bias_ih, bias_hh)
    ops = _Ops(weight_hh)
    w_hr, w_hz, w_hn = weight_hh[:h], weight_hh[h:2 * h], weight_hh[2 * h:]
    d_hr, d_hz, d_hn = ops.diag(w_hr), ops.diag(w_hz), ops.diag(w_hn)

    def gates(s, u):
        gi = linear(u, weight_ih, bias_ih)
        gh = linear(s, weight_hh, bias_hh)
        r = ops.sigmoid(gi[..., :h] + gh[..., :h])
        z = ops.sigmoid(gi[..., h:2 * h] + gh[..., h:2 * h])
        hn = gh[..., 2 * h:]
        n = ops.tanh(gi[..., 2 * h:] + r * hn)
        return r, z, n, hn

    def step(s, u):
        _, z, n, _ = gates(s, u)
        return (1 - z) * n + z * s

    def scales(s, u):
        r, z, n, hn = gates(s, u)
        common = (1 - z) * (1 - n * n)
        return z, common * r, common * hn * r * (1 - r), (s - n) * z * (1 - z)

    def jacobian(s, u):
        z, a_n, a_r, a_z = scales(s, u)
        return (ops.eye_like(z) + a_n[..., :, None] * w_hn + a_r[..., :, None] * w_hr
                + a_z[..., :, None] * w_hz)

    def diagonal(s, u):
        z, a_n, a_r, a_z = scales(s, u)
        return z + a_n * d_hn + a_r * d_hr + a_z * d_hz

    return Cell(step, jacobian, diagonal, h, d, 1.0 + 4.0 * h / (3.0 * (d + h)), 1.0, "gru",
                (weight_ih, weight_hh, bias_ih, bias_hh))


# -------------------------------------------------------------------------------- softplus RNN


def softplus_rnn(W: Array, U: Array, b: Array) -> Cell:
    """The paper's RNN cell s_t = softplus(W s_{t−1} + U u_t + b): ``W (H, H)``, ``U (H, D)``,
    ``b (H,)``. Jacobian diag(σ(a)) W with a the pre-activation; its cost: the pre-activation
    (one pass) plus an H×H row scaling (H² against the step's H(H + D)): ``full_cost = 1 +
    H/(H + D)``; ``diagonal_cost = 1``."""
    h = W.shape[0]
    _shape_of("W", W, (h, h))
    if U.ndim != 2 or U.shape[0] != h:
        raise ValueError(f"U must have shape ({h}, D), got {tuple(U.shape)}")
    _shape_of("b", b, (h,))
    d = U.shape[1]
    ops = _Ops(W)
    w_diag = ops.diag(W)

    def pre(s, u):
        return linear(s, W) + linear(u, U) + b

    def step(s, u):
        return ops.softplus(pre(s, u))

    def jacobian(s, u):
        return ops.sigmoid(pre(s, u))[..., :, None] * W

    def diagonal(s, u):
        return ops.sigmoid(pre(s, u)) * w_diag

    return Cell(step, jacobian, diagonal, h, d, 1.0 + h / (h + d), 1.0, "softplus_rnn", (W, U, b))


# ------------------------------------------------------------------------------------------ LSTM


def lstm(weight_ih: Array, weight_hh: Array, bias_ih: Array, bias_hh: Array) -> Cell:
    """An LSTM cell with ``torch.nn.LSTM``'s parameter layout and equations (gates i, f, g, o);
    its state is the pair ``(h, c)``, as ``torch.nn.LSTMCell`` takes it:

        i = σ(W_ii u + b_ii + W_hi h + b_hi),  f = σ(… W_hf …),  g = tanh(… W_hg …),
        o = σ(… W_ho …),   c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c').

    ``weight_ih (4H, D)``, ``weight_hh (4H, H)``, ``bias_ih (4H,)``, ``bias_hh (4H,)``.

    The Jacobians are of the solvers' flat state ``[h, c]`` (2H): with a_g = i(1−g²),
    a_i = g·i(1−i), a_f = c·f(1−f), τ = tanh(c'), k = o(1−τ²),
    ∂c'/∂h = diag(a_f) W_hf + diag(a_i) W_hi + diag(a_g) W_hg,  ∂c'/∂c = diag(f),
    ∂h'/∂h = diag(τ·o(1−o)) W_ho + diag(k) ∂c'/∂h,  ∂h'/∂c = diag(k·f).
    Cost: the gates once more (one pass) plus four row-scaled H×H matrices, about 4H² against the
    step's 4H(D + H): ``full_cost = 1 + H/(D + H)``; the diagonal needs only the gates:
    ``diagonal_cost = 1``.
    """
    h, d = _gated_sizes(4, weight_ih, weight_hh, bias_ih, bias_hh)
    ops = _Ops(weight_hh)
    w_hi, w_hf, w_hg, w_ho = (weight_hh[k * h:(k + 1) * h] for k in range(4))
    d_hi, d_hf, d_hg, d_ho = (ops.diag(w) for w in (w_hi, w_hf, w_hg, w_ho))

    def gates(hs, c, u):
        pre = linear(u, weight_ih, bias_ih) + linear(hs, weight_hh, bias_hh)
        i = ops.sigmoid(pre[..., :h])
        f = ops.sigmoid(pre[..., h:2 * h])
        g = ops.tanh(pre[..., 2 * h:3 * h])
        o = ops.sigmoid(pre[..., 3 * h:])
        c_new = f * c + i * g
        return i, f, g, o, c_new, ops.tanh(c_new)

    def step(state, u):
        hs, c = state
        _, _, _, o, c_new, tau = gates(hs, c, u)
        return o * tau, c_new

    def scales(s, u):
        hs, c = s[..., :h], s[..., h:]
        i, f, g, o, _, tau = gates(hs, c, u)
        k = o * (1 - tau * tau)
        return i * (1 - g * g), g * i * (1 - i), c * f * (1 - f), f, tau * o * (1 - o), k

    def jacobian(s, u):
        a_g, a_i, a_f, f, a_o, k = scales(s, u)
        dc_dh = a_f[..., :, None] * w_hf + a_i[..., :, None] * w_hi + a_g[..., :, None] * w_hg
        dh_dh = a_o[..., :, None] * w_ho + k[..., :, None] * dc_dh
        top = ops.cat([dh_dh, ops.eye_like(k * f)], -1)
        bottom = ops.cat([dc_dh, ops.eye_like(f)], -1)
        return ops.cat([top, bottom], -2)

    def diagonal(s, u):
        a_g, a_i, a_f, f, a_o, k = scales(s, u)
        dc_dh = a_f * d_hf + a_i * d_hi + a_g * d_hg
        return ops.cat([a_o * d_ho + k * dc_dh, f], -1)

    return Cell(step, jacobian, diagonal, h, d, 1.0 + h / (d + h), 1.0, "lstm",
                (weight_ih, weight_hh, bias_ih, bias_hh))


# ----------------------------------------------------------------------------- random weights


def random_gru_weights(hidden_size: int, input_size: int, *, seed: int, scale: float = 1.0):
    """NumPy float32 weights in ``nn.GRU``'s layout, drawn as ``nn.GRU`` initialises them
    (uniform in ±scale/√H), from ``numpy.random.default_rng(seed)``. Small ``scale`` makes the
    cell more strongly contracting; at 1.0 a GRU started this way is contracting in practice."""
    rng = np.random.default_rng(seed)
    bound = scale / np.sqrt(hidden_size)

    def draw(*shape):
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    return (draw(3 * hidden_size, input_size), draw(3 * hidden_size, hidden_size),
            draw(3 * hidden_size), draw(3 * hidden_size))


def random_gru(hidden_size: int, input_size: int, *, seed: int, framework: str = "torch",
               scale: float = 1.0) -> Cell:
    """:func:`gru` on :func:`random_gru_weights`, as ``"torch"`` or ``"jax"`` float32 arrays (CPU)."""
    weights = random_gru_weights(hidden_size, input_size, seed=seed, scale=scale)
    return gru(*to_framework(weights, framework))


def to_framework(arrays, framework: str):
    """NumPy arrays as PyTorch tensors or JAX arrays (same dtype)."""
    if framework == "torch":
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    if framework == "jax":
        import jax.numpy as jnp

        return tuple(jnp.asarray(a) for a in arrays)
    raise ValueError(f"framework must be 'torch' or 'jax', got {framework!r}")
