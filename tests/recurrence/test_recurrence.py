"""ffsolve.solve_recurrence: every method against the loop, in PyTorch and JAX.

Small on purpose (T <= 96, H <= 6, batch <= 3): JAX compiles each method once per shape, so every
JAX test here reuses one shape.
"""

import contextlib
import math
import warnings

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.recurrence import cells, solve_recurrence
from ffsolve.recurrence.scan import torch_scan
from ffsolve.recurrence.solve import _autodiff

jax = pytest.importorskip("jax")
jnp = jax.numpy

T, B, H, D = 96, 3, 5, 2
FRAMEWORKS = ("torch", "jax")
METHODS = ffsolve.available_recurrence_methods()


def _data(framework, seed=1, length=T, batch=B, hidden=H, inputs=D):
    rng = np.random.default_rng(seed)
    s0 = rng.standard_normal((batch, hidden)).astype(np.float32)
    u = rng.standard_normal((length, batch, inputs)).astype(np.float32)
    return cells.to_framework((s0, u), framework)


def _softplus(framework, seed=2, hidden=H, inputs=D):
    rng = np.random.default_rng(seed)
    w = (0.4 * rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)).astype(np.float32)
    w_in = rng.standard_normal((hidden, inputs)).astype(np.float32)
    b = rng.standard_normal(hidden).astype(np.float32)
    return cells.softplus_rnn(*cells.to_framework((w, w_in, b), framework))


@pytest.fixture(scope="module", params=FRAMEWORKS)
def gru_case(request):
    framework = request.param
    cell = cells.random_gru(H, D, seed=0, framework=framework)
    s0, u = _data(framework)
    reference = solve_recurrence(cell, s0, u, "sequential")
    return framework, cell, s0, u, reference


def _np(a):
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def test_the_public_api():
    assert METHODS == ["sequential", "jacobi", "newton", "quasi_newton", "damped_newton"]
    assert ffsolve.solve_recurrence is solve_recurrence


@pytest.mark.parametrize("method", METHODS)
def test_tol_zero_is_the_loop_bit_for_bit(gru_case, method):
    framework, cell, s0, u, reference = gru_case
    res = solve_recurrence(cell.step, s0, u, method=method, jacobian=cell)
    assert isinstance(res, ffsolve.SolveResult)
    assert type(res.x) is type(s0) and res.x.dtype == s0.dtype
    assert tuple(res.x.shape) == (T, B, H)
    assert res.converged and res.tol == 0.0 and res.sequence_length == T
    assert 1 <= res.iterations <= T
    assert np.array_equal(_np(res.x), _np(reference.x)), f"{framework} {method} is not bitwise"
    assert res.fallbacks == 0
    if method in ("newton", "quasi_newton", "damped_newton"):
        assert res.newton_iterations + res.polish_iterations == res.iterations
        newton_work = res.newton_iterations * (
            1 + (cell.diagonal_cost if method == "quasi_newton" else cell.full_cost))
        # Jacobi (polish) steps compute only the time steps from the first that moved (PyTorch
        # and NumPy); in JAX every step computes all T.
        polish = res.network_evaluations - newton_work
        if framework == "jax":
            assert polish == pytest.approx(res.polish_iterations)
        else:
            assert res.polish_iterations / T - 1e-9 <= polish <= res.polish_iterations + 1e-9


@contextlib.contextmanager
def _suffix_starts(monkeypatch):
    """The start of every suffix Jacobi step solve_recurrence takes inside the block."""
    from ffsolve.recurrence import solve as recurrence_solve

    starts, original = [], recurrence_solve._suffix_jacobi
    with monkeypatch.context() as patch:
        patch.setattr(recurrence_solve, "_suffix_jacobi", lambda o, step, u_, x, start: (
            starts.append(start) or original(o, step, u_, x, start)))
        yield starts


@pytest.mark.parametrize("framework", ["torch", "numpy"])
def test_jacobi_computes_only_the_time_steps_that_can_still_change(framework, monkeypatch):
    """After a Jacobi step, the time steps before the first whose state moved are final: the next
    step computes from there on (the same bits as a full step, less work)."""
    weights = cells.random_gru_weights(H, 3, seed=2)
    rng = np.random.default_rng(0)
    u_np, s0_np = rng.normal(size=(T, B, 3)).astype(np.float32), np.zeros((B, H), np.float32)
    if framework == "torch":
        cell = cells.gru(*cells.to_framework(weights, "torch"))
        u, s0 = torch.from_numpy(u_np), torch.from_numpy(s0_np)
    else:  # a user's own NumPy step (elementwise in its rows: the same bits for any row count)
        w_ih, w_hh = weights[0][:H], weights[1][:H]

        def cell(s, x):
            return np.tanh(np.einsum("...k,hk->...h", x, w_ih) + np.einsum("...k,hk->...h", s, w_hh))

        u, s0 = u_np, s0_np
    loop = solve_recurrence(cell, s0, u, "sequential")
    res = solve_recurrence(cell, s0, u, "jacobi")
    assert np.array_equal(_np(res.x), _np(loop.x))
    assert res.network_evaluations < 0.9 * res.iterations
    # The saving is the suffix path's: it was taken, from a start after the first time step.
    with _suffix_starts(monkeypatch) as starts:
        again = solve_recurrence(cell, s0, u, "jacobi")
    assert starts and min(starts) >= 1 and np.array_equal(_np(again.x), _np(res.x))


def test_a_step_that_computes_in_jax_on_numpy_arrays_keeps_one_shape(monkeypatch):
    """The built-in cells given NumPy weights compute in eager JAX, which compiles anew for
    every new shape: Jacobi then computes every time step each step instead of a suffix of a new
    length each step (JAX arrays get compiled power-of-two windows); the result is the loop's all
    the same."""
    cell = cells.gru(*cells.random_gru_weights(H, 3, seed=2))
    rng = np.random.default_rng(0)
    u, s0 = rng.normal(size=(T, B, 3)).astype(np.float32), np.zeros((B, H), np.float32)
    with _suffix_starts(monkeypatch) as starts:
        res = solve_recurrence(cell, s0, u, "jacobi")
    assert starts == []
    assert np.array_equal(_np(res.x), _np(solve_recurrence(cell, s0, u, "sequential").x))
    assert res.network_evaluations == res.iterations


def _starts_of(iterates):
    """The start of every Jacobi step of a traced solve, from its iterates, by the solver's rule:
    after each step, the first time step that moved (never going back)."""
    starts = [0]
    for before, after in zip(iterates[:-1], iterates[1:]):
        moved = np.flatnonzero((before != after).reshape(len(after), -1).any(1))
        starts.append(max(starts[-1], int(moved[0]) if moved.size else len(after)))
    return starts[:-1]  # the start each step ran with


def _window(length, start):  # the power-of-two window, written here independently of the solver
    size = 1
    while size < length - start:
        size *= 2
    return min(length, size)


def _frontier_gru(framework, input_seed=0):
    weights = cells.random_gru_weights(H, 3, seed=2)
    rng = np.random.default_rng(input_seed)
    cell = cells.gru(*cells.to_framework(weights, framework))
    s0, u = cells.to_framework((np.zeros((B, H), np.float32),
                                rng.normal(size=(T, B, 3)).astype(np.float32)), framework)
    return cell, s0, u


def test_jax_jacobi_computes_a_power_of_two_window_from_the_first_moving_step(monkeypatch):
    """JAX: a Jacobi step computes the last L = (T − start) rounded up to a power of two time
    steps (one compiled program per L, at most ⌈log₂T⌉ + 1), writes back those from start on, and
    counts L/T of work: the loop's bits and the full step's, in the same iterations, for less."""
    from collections import OrderedDict

    from ffsolve.recurrence import programs as program_cache
    from ffsolve.recurrence import solve as recurrence_solve

    cell, s0, u = _frontier_gru("jax")
    loop = solve_recurrence(cell, s0, u, "sequential")
    programs = OrderedDict()
    monkeypatch.setattr(program_cache, "_PROGRAMS", programs)
    res = solve_recurrence(cell, s0, u, "jacobi", check_loop=False)
    windows = [key for key in programs if key[0] == "window"]
    assert 1 < len(windows) == len(programs) <= math.log2(T) + 2
    again = solve_recurrence(cell, s0, u, "jacobi", check_loop=False)
    assert set(programs) == set(windows)  # compiled once, reused
    with recurrence_solve.frontier(False):
        full = solve_recurrence(cell, s0, u, "jacobi")
    assert np.array_equal(_np(res.x), _np(loop.x)) and np.array_equal(_np(full.x), _np(loop.x))
    assert np.array_equal(_np(again.x), _np(res.x))
    assert (res.iterations, res.stopped_by) == (full.iterations, full.stopped_by)
    assert full.network_evaluations == full.iterations
    assert res.network_evaluations < 0.9 * res.iterations
    # The work is the windows' rows, not only the rows from start on.
    starts = _starts_of(solve_recurrence(cell, s0, u, "jacobi", trace=True).trace.iterates)
    assert len(starts) == res.iterations and max(starts) > 0
    windows_work = sum(_window(T, start) for start in starts) / T
    assert res.network_evaluations == pytest.approx(windows_work, abs=1e-9)
    assert windows_work > sum(T - start for start in starts) / T + 1  # so the two are told apart


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_frontier_false_is_plain_jacobi(framework):
    cell, s0, u = _frontier_gru(framework)
    from ffsolve.recurrence.solve import frontier

    res = solve_recurrence(cell, s0, u, "jacobi")
    with frontier(False):
        full = solve_recurrence(cell, s0, u, "jacobi")
    assert np.array_equal(_np(res.x), _np(full.x)) and res.iterations == full.iterations
    assert full.network_evaluations == full.iterations > res.network_evaluations


def test_jax_frontier_keeps_the_bits_before_start_whatever_the_step(monkeypatch):
    """The window's time steps before start keep x's bits: with a step whose bits depend on the
    number of rows (here on purpose: the GRU plus 1e-6 on calls of 32 time steps), a window that
    shrank computes them otherwise, and writing the whole window back would change time steps
    already final. The check sees that mutation."""
    from collections import OrderedDict

    from ffsolve.recurrence import programs as program_cache
    from ffsolve.recurrence import solve as recurrence_solve

    # Inputs whose solve's start jumps over T − 32 in one step (asserted below; with input seed 0
    # it does not).
    cell, s0, u = _frontier_gru("jax", input_seed=2)

    def step(s, x):
        return cell.step(s, x) + (1e-6 if s.shape[0] == 32 * B else 0.0)

    def final_prefix_kept():
        res = solve_recurrence(step, s0, u, "jacobi", trace=True, check_loop=False)
        its = res.trace.iterates
        starts = _starts_of(its)
        # start jumped over the window's first time step: the window held final time steps
        assert res.converged and any(a < T - 32 < b < T - 16 for a, b in zip(starts, starts[1:]))
        return all(np.array_equal(its[k + 1][:start], its[k][:start])
                   for k, start in enumerate(starts))

    assert final_prefix_kept()
    right = recurrence_solve._window_jacobi

    def whole_window(o, step_, s0_, u_, x, start, window):  # the mutation: no mask
        return right(o, step_, s0_, u_, x, 0, window)

    monkeypatch.setattr(recurrence_solve, "_window_jacobi", whole_window)
    monkeypatch.setattr(program_cache, "_PROGRAMS", OrderedDict())
    assert not final_prefix_kept()


def test_sequential_is_the_users_own_loop(gru_case):
    framework, cell, s0, u, reference = gru_case
    if framework == "jax":  # the loop a JAX user writes: a jitted lax.scan of the step
        scan = jax.jit(lambda s0, u: jax.lax.scan(lambda s, x: (cell.step(s, x),) * 2, s0, u)[1])
        states = _np(scan(s0, u))
    else:
        s, rows = s0, []
        for t in range(T):  # the plain loop a user writes, one (batch, H) state at a time
            s = cell.step(s, u[t])
            rows.append(_np(s))
        states = np.stack(rows)
    assert np.array_equal(states, _np(reference.x))
    assert reference.iterations == T and reference.network_evaluations == 1.0
    assert reference.stopped_by == "sequential" and reference.loop_bitwise is True


def test_newton_beats_jacobi_and_quasi_sits_between(gru_case):
    _framework, cell, s0, u, reference = gru_case
    steps = {m: solve_recurrence(cell, s0, u, method=m, jacobian=cell, tol=1e-5)
             for m in ("jacobi", "newton", "quasi_newton")}
    for m, res in steps.items():
        assert res.converged and res.tol == 1e-5
        assert np.max(np.abs(_np(res.x) - _np(reference.x))) < 1e-3, m
    assert steps["newton"].iterations < steps["quasi_newton"].iterations < steps["jacobi"].iterations


def test_huge_damping_takes_newtons_steps(gru_case):
    _framework, cell, s0, u, _ = gru_case
    newton = solve_recurrence(cell, s0, u, method="newton", jacobian=cell, tol=1e-5)
    damped = solve_recurrence(cell, s0, u, method="damped_newton", jacobian=cell, tol=1e-5,
                              damping=1e12)
    assert damped.iterations == newton.iterations and damped.damping == 1e12
    np.testing.assert_allclose(_np(damped.x), _np(newton.x), atol=1e-5)
    light = solve_recurrence(cell, s0, u, method="damped_newton", jacobian=cell, tol=1e-5,
                             damping=1e-2)
    assert light.iterations > newton.iterations  # strong damping: smaller steps


def test_tol_bounds_the_last_change(gru_case):
    _framework, cell, s0, u, _ = gru_case
    res = solve_recurrence(cell, s0, u, method="quasi_newton", jacobian=cell, tol=1e-4, trace=True)
    assert res.trace.max_change[-1] <= 1e-4 < res.trace.max_change[0]
    assert len(res.trace.change) == res.iterations and len(res.trace.error) == res.iterations + 1
    assert res.trace.error[-1] == 0.0 and res.trace.iterates.shape == (res.iterations + 1, T, B, H)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("which", ["gru", "softplus_rnn"])
def test_analytic_jacobians_equal_autodiff(framework, which):
    cell = cells.random_gru(H, D, seed=3, framework=framework) if which == "gru" \
        else _softplus(framework)
    _, u = _data(framework, seed=4, length=7)
    s = cells.to_framework([np.random.default_rng(5).standard_normal((7, B, H)).astype(np.float32)],
                           framework)[0]

    jit = jax.jit if framework == "jax" else (lambda fn: fn)
    full = _np(jit(cell.jacobian)(s, u))
    auto = _np(jit(_autodiff(framework, cell.step, "full"))(s, u))
    np.testing.assert_allclose(full, auto, rtol=1e-5, atol=1e-6)
    diagonal = _np(jit(cell.diagonal)(s, u))
    assert diagonal.shape == (7, B, H)
    np.testing.assert_allclose(diagonal, np.diagonal(full, 0, -2, -1), rtol=1e-5, atol=1e-6)


def test_the_gru_cell_is_torch_nn_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(D, H)
    cell = cells.gru(*(p.detach() for p in (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0,
                                             gru.bias_hh_l0)))
    s0, u = _data("torch")
    with torch.no_grad():
        expected, _ = gru(u, s0[None])
    res = solve_recurrence(cell, s0, u, method="newton", jacobian=cell)
    np.testing.assert_allclose(_np(res.x), _np(expected), rtol=1e-5, atol=1e-6)


def test_softplus_rnn_and_autodiff_jacobians_are_exact_too():
    cell = _softplus("torch")
    s0, u = _data("torch")
    ref = solve_recurrence(cell, s0, u, "sequential")
    for method in ("newton", "quasi_newton"):
        res = solve_recurrence(cell.step, s0, u, method=method)  # Jacobians by autodiff
        assert np.array_equal(_np(res.x), _np(ref.x)) and res.iterations <= T
        polish = res.network_evaluations - res.newton_iterations * (1 + H)
        # Polish (Jacobi) steps compute only the time steps from the first that moved.
        assert res.polish_iterations / T - 1e-9 <= polish <= res.polish_iterations + 1e-9


def test_a_diverging_newton_step_falls_back_to_jacobi():
    # |∂step/∂s| up to 100: the linearised recurrence multiplies such factors along time and
    # overflows float32 within a few dozen positions, so Newton's update is inf/NaN there.
    def step(s, u):
        return 0.5 * torch.sin(200.0 * s) + u

    s0, u = torch.zeros(2, 1), torch.rand(60, 2, 1, generator=torch.Generator().manual_seed(0))
    ref = solve_recurrence(step, s0, u, "sequential")
    for method in ("newton", "damped_newton"):
        res = solve_recurrence(step, s0, u, method=method, damping=1e8 if "damped" in method else None)
        assert res.fallbacks > 0 or method == "damped_newton"  # the filter's gain may keep it finite
        assert bool(torch.isfinite(res.x).all())
        assert np.array_equal(_np(res.x), _np(ref.x)) and res.iterations <= 60


def test_the_damped_step_is_the_kalman_filter_mean():
    # One damped_newton iteration from zeros against a plain sequential Kalman filter in float64.
    cell = cells.random_gru(4, D, seed=6, framework="torch")
    s0, u = _data("torch", seed=7, length=9, batch=2, hidden=4)
    sigma2 = 0.7
    res = solve_recurrence(cell, s0, u, method="damped_newton", jacobian=cell, damping=sigma2,
                           max_iters=1)
    x = torch.zeros(9, 2, 4)
    prev = torch.cat([s0[None], x[:-1]])
    f, a = cell.step(prev, u).double(), cell.jacobian(prev, u).double()
    m, p = torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, 4, dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)
    means = []
    for t in range(9):
        m_pred = (a[t] @ m[..., None])[..., 0] + f[t]
        p_pred = a[t] @ p @ a[t].mT + eye
        gain = p_pred @ torch.linalg.inv(p_pred + sigma2 * eye)
        m = m_pred - (gain @ m_pred[..., None])[..., 0]
        p = (eye - gain) @ p_pred
        means.append(m)
    expected = torch.stack(means)
    assert not res.converged and res.iterations == 1
    np.testing.assert_allclose(_np(res.x[1:]), _np(expected[1:]), rtol=1e-4, atol=1e-5)
    assert torch.equal(res.x[0], cell.step(s0[None], u[:1])[0])  # position 1 is exact: f


def test_torch_scan_is_the_running_composition():
    g = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 5, 8, 13):
        a, b = torch.rand(length, 3, generator=g), torch.rand(length, 3, generator=g)
        out_a, out_b = torch_scan(lambda e, l_: (l_[0] * e[0], l_[0] * e[1] + l_[1]), (a, b))
        run_b = torch.zeros(3, dtype=torch.float64)
        for t in range(length):
            run_b = a[t].double() * run_b + b[t].double()
            np.testing.assert_allclose(out_b[t].double(), run_b, rtol=1e-6)
            np.testing.assert_allclose(out_a[t].double(), a[: t + 1].double().prod(0), rtol=1e-6)


def test_bad_input_is_refused_with_a_message():
    cell = cells.random_gru(H, D, seed=0)
    s0, u = _data("torch")
    with pytest.raises(ValueError, match=r"method must be one of \['sequential', 'jacobi'"):
        solve_recurrence(cell, s0, u, method="deer")
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        solve_recurrence(cell, s0, u, method="jacobi", tol=-1e-3)
    with pytest.raises(ValueError, match=r"inputs must have shape \(T, \*batch, D\)"):
        solve_recurrence(cell, s0, u[:, :2])
    with pytest.raises(ValueError, match="inputs must be the same kind of array"):
        solve_recurrence(cell, s0, np.asarray(u))
    with pytest.raises(ValueError, match="s0 must be an array"):
        solve_recurrence(cell, [1.0, 2.0], u)
    with pytest.raises(ValueError, match="damping is only used by 'damped_newton'"):
        solve_recurrence(cell, s0, u, method="newton", damping=1.0)
    with pytest.raises(ValueError, match="damping"):
        solve_recurrence(cell, s0, u, method="damped_newton", damping=-1.0)
    with pytest.raises(ValueError, match="max_iters must be a positive integer"):
        solve_recurrence(cell, s0, u, method="jacobi", max_iters=0)
    with pytest.raises(ValueError, match="step returned states of shape"):
        solve_recurrence(lambda s, x: s[..., :2], s0, u, method="jacobi")
    with pytest.raises(ValueError, match="no 'diagonal' Jacobian"):
        solve_recurrence(cell, s0, u, method="quasi_newton", jacobian={"full_cost": 1.0})
    with pytest.raises(ValueError, match="weight_hh must have shape"):
        cells.gru(torch.zeros(6, 2), torch.zeros(6, 3), torch.zeros(6), torch.zeros(6))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_single_unbatched_sequence_is_the_loop_or_says_so(framework):
    # The loop calls the cell on (H,) vectors, the parallel methods on (T, H) rows. PyTorch's
    # built-in cells give every row the same bits either way; XLA compiles the vector step inside
    # the loop's scan differently from the batched one, and the result must say so.
    cell = cells.random_gru(H, D, seed=0, framework=framework)
    s0, u = _data(framework, batch=1)
    s0, u = s0[0], u[:, 0]  # (H,), (T, D)
    ref = solve_recurrence(cell, s0, u, "sequential")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = solve_recurrence(cell, s0, u, method="jacobi", trace=True)
    assert tuple(res.x.shape) == (T, H) and res.trace.iterates.shape[1:] == (T, H)
    same = np.array_equal(_np(res.x), _np(ref.x))
    assert res.loop_bitwise is same and res.iterations <= T
    flagged = [w for w in caught if issubclass(w.category, ffsolve.NotBitwiseWarning)]
    assert len(flagged) == (0 if same else 1)
    if framework == "torch":
        assert same
    else:
        assert same or 0 < res.loop_max_diff < 1e-5


def test_jax_linear_gives_a_row_the_same_bits_in_a_scan_and_in_one_batched_call():
    """cells.linear in JAX (K multiply-adds in feature order): a time step's rows get the same
    bits from a jitted scan over the steps (the loop) as from one call on every step (a Jacobi
    step), for every shape here; a plain product does not (the check can fail)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    shapes = [(h, k, b) for h in (8, 32) for k in (4, 32, 128) for b in (1, 16)]

    def differing(product):
        found = []
        for h, k, b in shapes:
            w = jnp.asarray(rng.standard_normal((3 * h, k)).astype(np.float32))
            x = jnp.asarray(rng.standard_normal((50, b, k)).astype(np.float32))
            batched = jax.jit(lambda x: product(x, w))(x)
            looped = jax.jit(lambda x: jax.lax.scan(lambda c, xt: (c, product(xt, w)), 0, x)[1])(x)
            if not np.array_equal(np.asarray(batched), np.asarray(looped)):
                found.append((h, k, b))
        return found

    assert differing(cells.linear) == []
    assert differing(lambda x, w: x @ w.T)  # the mutation: XLA's matrix kernel
