"""solve_recurrence on the cells users already have, as they write them.

The promise: at ``tol=0`` every result is the user's own loop bit for bit, or says that it is not
(``loop_bitwise=False`` and a :class:`ffsolve.NotBitwiseWarning`); it never claims it silently.
Small sizes (T = 60, H = 8, batch 1 or 2) so the whole file runs in seconds.
"""

import time
import warnings

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.recurrence import cells, check_step, solve_recurrence

jax = pytest.importorskip("jax")
jnp = jax.numpy
nn = pytest.importorskip("flax.linen")

T, H, D = 60, 8, 3
PARALLEL = ("jacobi", "newton", "quasi_newton", "damped_newton")


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _solve_all(step, s0, u, reference):
    """Every parallel method: the result is the loop's bits exactly when it says so."""
    outcomes = {}
    for method in PARALLEL:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            res = solve_recurrence(step, s0, u, method=method)
        same = np.array_equal(_np(_first(res.x)), _np(reference))
        flagged = [w for w in caught if issubclass(w.category, ffsolve.NotBitwiseWarning)]
        assert res.converged and res.iterations <= T, method
        assert res.loop_bitwise is same, method
        assert len(flagged) == (0 if same else 1), method
        if not same:
            assert "cells.linear" in str(flagged[0].message) and 0 < res.loop_max_diff < 1e-4
            assert np.allclose(_np(_first(res.x)), _np(reference), atol=1e-4)
        outcomes[method] = same
    return outcomes


def _torch_loop(step, s0, u, pick=lambda s: s):
    s, rows = s0, []
    with torch.no_grad():
        for t in range(u.shape[0]):
            s = step(s, u[t])
            rows.append(pick(s))
    return torch.stack(rows)


@pytest.fixture
def torch_data():
    g = torch.Generator().manual_seed(0)
    return torch.zeros(1, H), torch.randn(T, 1, D, generator=g)


def test_a_plain_tanh_rnn_at_batch_one_is_flagged_not_silently_wrong(torch_data):
    s0, u = torch_data
    g = torch.Generator().manual_seed(1)
    w, w_in = torch.randn(H, H, generator=g) * 0.5 / H**0.5, torch.randn(H, D, generator=g)

    def step(s, x):  # as a user writes it: plain products, whole-tensor tanh
        return torch.tanh(s @ w.T + x @ w_in.T)

    outcomes = _solve_all(step, s0, u, _torch_loop(step, s0, u))
    # One row against many picks another kernel on CPU: flagged here, at least for Jacobi.
    assert not check_step(step, s0, u).bitwise or all(outcomes.values())


def test_the_same_rnn_written_with_the_row_wise_helpers_is_bitwise(torch_data):
    s0, u = torch_data
    g = torch.Generator().manual_seed(1)
    w, w_in = torch.randn(H, H, generator=g) * 0.5 / H**0.5, torch.randn(H, D, generator=g)
    tanh = cells.rowwise(torch.tanh)

    def step(s, x):
        return tanh(cells.linear(s, w) + cells.linear(x, w_in))

    assert check_step(step, s0, u).bitwise
    assert all(_solve_all(step, s0, u, _torch_loop(step, s0, u)).values())


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell"])
def test_torch_nn_cells_work_unchanged(torch_data, kind):
    s0, u = torch_data
    torch.manual_seed(2)
    cell = getattr(torch.nn, kind)(D, H)

    def step(s, x):
        return cell(x, s)

    _solve_all(step, s0, u, _torch_loop(step, s0, u))


def test_torch_lstm_cell_with_its_h_c_state(torch_data):
    s0, u = torch_data
    torch.manual_seed(3)
    cell = torch.nn.LSTMCell(D, H)

    def step(state, x):
        return cell(x, state)

    state0 = (s0, s0 + 0.1)
    _solve_all(step, state0, u, _torch_loop(step, state0, u, pick=lambda s: s[0]))
    with torch.no_grad():  # the cell's parameters require grad; gradients are not supported yet
        res = solve_recurrence(step, state0, u, method="jacobi", tol=1e-6)
    assert isinstance(res.x, tuple) and tuple(res.x[1].shape) == (T, 1, H)


def test_the_builtin_lstm_is_torch_lstm_and_bitwise_with_analytic_jacobians(torch_data):
    s0, u = torch_data
    torch.manual_seed(4)
    ref_cell = torch.nn.LSTMCell(D, H)
    cell = cells.lstm(*(p.detach() for p in (ref_cell.weight_ih, ref_cell.weight_hh,
                                              ref_cell.bias_ih, ref_cell.bias_hh)))
    state0 = (s0, s0 + 0.1)
    loop = _torch_loop(cell.step, state0, u, pick=lambda s: s[0])
    torch_loop = _torch_loop(lambda s, x: ref_cell(x, s), state0, u, pick=lambda s: s[0])
    np.testing.assert_allclose(_np(loop), _np(torch_loop), atol=1e-6)
    assert all(_solve_all(cell, state0, u, loop).values())
    # The analytic Jacobians of the flat state [h, c] agree with forward-mode autodiff.
    from ffsolve.recurrence.solve import _autodiff
    from ffsolve.recurrence.state import StateLayout

    layout = StateLayout(state0)
    flat = torch.randn(5, 2 * H, generator=torch.Generator().manual_seed(5))
    auto = _autodiff("torch", layout.flat_step(cell.step), "full")(flat, u[:5, 0])
    np.testing.assert_allclose(_np(cell.jacobian(flat, u[:5, 0])), _np(auto), atol=1e-5)
    np.testing.assert_allclose(_np(cell.diagonal(flat, u[:5, 0])),
                               _np(auto.diagonal(0, -2, -1)), atol=1e-5)
    newton = solve_recurrence(cell, state0, u, method="newton")
    assert newton.network_evaluations < solve_recurrence(
        cell.step, state0, u, method="newton").network_evaluations  # analytic: cheaper


def _jax_scan(step, s0, u, pick=lambda s: s):
    def body(carry, x):
        new = step(carry, x)
        new = new[0] if isinstance(new, tuple) and len(new) == 2 and not isinstance(
            carry, tuple) else (new[0] if isinstance(new[0], tuple) else new)
        return new, pick(new)

    return jax.jit(lambda s0, u: jax.lax.scan(body, s0, u)[1])(s0, u)


@pytest.mark.parametrize("kind", ["GRUCell", "LSTMCell"])
def test_flax_cells_work_unchanged(torch_data, kind):
    _, u = torch_data
    u = jnp.asarray(u.numpy())
    cell = getattr(nn, kind)(features=H)
    carry0 = cell.initialize_carry(jax.random.key(0), (1, D))
    params = cell.init(jax.random.key(1), carry0, u[0])

    def step(carry, x):
        return cell.apply(params, carry, x)  # (new_carry, output), as Flax cells return

    reference = _jax_scan(lambda c, x: step(c, x)[0], carry0, u,
                          pick=(lambda c: c[1]) if kind == "LSTMCell" else (lambda c: c))
    outcomes = {}
    for method in PARALLEL:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = solve_recurrence(step, carry0, u, method=method)
        got = res.x[1] if kind == "LSTMCell" else res.x  # Flax's LSTM carry is (c, h)
        same = np.array_equal(_np(got), _np(reference))
        assert res.loop_bitwise is same
        assert sum(issubclass(w.category, ffsolve.NotBitwiseWarning) for w in caught) == (not same)
        outcomes[method] = same


def test_changed_weights_are_never_answered_from_a_stale_program():
    w = jnp.asarray(np.random.default_rng(0).standard_normal((H, H)).astype(np.float32) * 0.3)
    weights = {"w": w}

    def step(s, x):  # reads its weights from a closure, as in a training loop
        return jnp.tanh(s @ weights["w"].T + x[..., :1])

    s0 = jnp.zeros((2, H))
    u = jnp.asarray(np.random.default_rng(1).standard_normal((T, 2, D)).astype(np.float32))
    before = {m: solve_recurrence(step, s0, u, method=m).x for m in ("sequential", "jacobi")}
    weights["w"] = w * 2.0
    for method in ("sequential", "jacobi", "newton"):
        fresh = _jax_scan(step, s0, u)
        after = solve_recurrence(step, s0, u, method=method, tol=1e-6 if method != "sequential"
                                 else 0.0)
        assert np.allclose(_np(after.x), _np(fresh), atol=1e-5), method
        assert not np.allclose(_np(after.x), _np(before["sequential"]), atol=1e-3), method
    # A new lambda of the same body reuses the compiled program: far faster than a compile.
    solve_recurrence(lambda s, x: step(s, x), s0, u, method="jacobi")
    start = time.perf_counter()
    solve_recurrence(lambda s, x: step(s, x), s0, u, method="jacobi")
    assert time.perf_counter() - start < 2.0  # a compile here takes ~0.1 s, a rerun ms


def test_gradients_are_refused_loudly_not_dropped(torch_data):
    s0, u = torch_data
    w = torch.randn(H, H, requires_grad=True)
    with pytest.raises(RuntimeError, match="does not propagate gradients yet"):
        solve_recurrence(lambda s, x: torch.tanh(s @ w.T), s0, u, method="jacobi")
    with torch.no_grad():
        res = solve_recurrence(lambda s, x: torch.tanh(s @ w.T), s0, u, method="jacobi")
    assert res.converged
    with pytest.raises(TypeError, match="cannot run under jax.jit"):
        jax.jit(lambda s0, u: solve_recurrence(lambda s, x: s + x[..., :1], s0, u).x)(
            jnp.zeros((1, H)), jnp.zeros((T, 1, D)))


def test_rough_edges_have_clear_messages(torch_data):
    s0, u = torch_data
    with pytest.raises(TypeError, match=r"step returned \(Tensor of shape .*expected the new state"):
        solve_recurrence(lambda s, x: (s, s, s), s0, u)

    def one_hot_step(s, x):  # one_hot of the inputs: fine, the Jacobian's vmap is over s only
        idx = (x[..., 0] > 0).long()
        return torch.tanh(s + torch.nn.functional.one_hot(idx, H).to(s.dtype))

    # (it failed under the earlier vmap(jacfwd) Jacobian; forward mode over the state alone works)
    newton = solve_recurrence(one_hot_step, s0, u, method="newton")
    assert newton.converged and newton.loop_bitwise is not None
    with pytest.raises(ValueError, match="time_axis must be 0"):
        solve_recurrence(one_hot_step, s0, u, time_axis=2)


def test_batch_first_and_numpy(torch_data):
    cell = cells.random_gru(H, D, seed=0)
    g = torch.Generator().manual_seed(6)
    s0, u = torch.randn(2, H, generator=g), torch.randn(T, 2, D, generator=g)
    ref = solve_recurrence(cell, s0, u, "sequential")
    batch_first = solve_recurrence(cell, s0, u.transpose(0, 1), "newton", time_axis=1)
    assert torch.equal(batch_first.x, ref.x.transpose(0, 1))

    w = np.random.default_rng(0).standard_normal((H, H)).astype(np.float32) * 0.3

    def np_step(s, x):
        return np.tanh(s @ w.T + x[..., :1])

    s0n, un = np.zeros((2, H), np.float32), u.numpy()
    loop = solve_recurrence(np_step, s0n, un, "sequential")
    res = solve_recurrence(np_step, s0n, un, "jacobi")
    assert isinstance(res.x, np.ndarray) and res.converged
    assert res.loop_bitwise is np.array_equal(res.x, loop.x)
    with pytest.raises(ValueError, match="torch.func.vmap|jacobian"):
        solve_recurrence(np_step, s0n, un, "newton")


def test_a_deadline_stops_between_steps(torch_data):
    s0, u = torch_data
    cell = cells.random_gru(H, D, seed=0)
    res = solve_recurrence(cell, s0, u, "jacobi", deadline=time.perf_counter())
    assert res.stopped_by == "deadline" and not res.converged and res.iterations == 1
    full = solve_recurrence(cell, s0, u, "jacobi")
    assert full.stopped_by in ("fixed_point", "exact_prefix") and full.final_change is not None


@pytest.mark.parametrize("hidden", [3, 8, 32])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("kind", ["gru", "lstm", "softplus_rnn"])
def test_builtin_torch_cells_are_the_plain_loops_bits_at_every_size(kind, batch, hidden):
    rng = np.random.default_rng(hidden * 10 + batch)
    length = 40
    if kind == "gru":
        cell = cells.random_gru(hidden, D, seed=hidden)
    elif kind == "lstm":
        lstm = torch.nn.LSTMCell(D, hidden)
        cell = cells.lstm(*(p.detach() for p in (lstm.weight_ih, lstm.weight_hh, lstm.bias_ih,
                                                  lstm.bias_hh)))
    else:
        w = rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.4 / hidden**0.5
        cell = cells.softplus_rnn(torch.from_numpy(w),
                                  torch.from_numpy(rng.standard_normal((hidden, D)).astype(np.float32)),
                                  torch.from_numpy(rng.standard_normal(hidden).astype(np.float32)))
    s0 = torch.from_numpy(rng.standard_normal((batch, hidden)).astype(np.float32))
    state0 = (s0, s0 * 0.5) if kind == "lstm" else s0
    u = torch.from_numpy(rng.standard_normal((length, batch, D)).astype(np.float32))
    loop = _torch_loop(cell.step, state0, u, pick=lambda s: s[0] if kind == "lstm" else s)
    for method in ("jacobi", "quasi_newton"):
        res = solve_recurrence(cell, state0, u, method)
        assert res.loop_bitwise is True and torch.equal(_first(res.x), loop), method
