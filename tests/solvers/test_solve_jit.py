"""``ffsolve.solve`` under ``jax.jit`` and ``jax.vmap``: the compiled driver.

Where JAX traces the solve (``x0`` or the arrays ``f`` closes over), every method runs as one
program (:mod:`ffsolve.solvers.compiled`, a ``lax.while_loop``) with the Python driver's stopping
rules. The references here are independent of that program: a plain Python loop that computes one
position per call of the jitted ``f``, and the Python driver (un-jitted ``ffsolve.solve``) on the
jitted ``f``. (An ``f`` run op by op may round differently from the same ``f`` compiled, whatever
the driver: XLA fuses its operations. So the references call ``jax.jit(f)``.)
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ffsolve
from ffsolve.solvers import compiled

METHODS = ["sequential", "jacobi", "gs_jacobi", "jacobi_gs"]


# ------------------------------------------------------------------------------- the maps


def made(dims=10, batch=3, hidden=16, seed=0):
    """A MADE-style masked MLP with Gaussian outputs and noise drawn up front: ``(f, x0, axis)``,
    triangular along axis 1 of ``(batch, dims)``; ``f(x, noise, scale)`` for lanes of vmap."""
    rng = np.random.default_rng(seed)
    degrees = rng.integers(0, dims - 1, hidden)
    m_in = (degrees[None, :] >= np.arange(dims)[:, None]).astype(np.float32)
    m_out = (np.arange(dims)[None, :] > degrees[:, None]).astype(np.float32)
    w1 = jnp.asarray(rng.standard_normal((dims, hidden)) * m_in / np.sqrt(dims), jnp.float32)
    b1 = jnp.asarray(rng.standard_normal(hidden) * 0.1, jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((hidden, 2 * dims)) * np.concatenate([m_out, m_out], 1)
                     / np.sqrt(hidden), jnp.float32)
    b2 = jnp.asarray(rng.standard_normal(2 * dims) * 0.1, jnp.float32)
    noise = jnp.asarray(rng.standard_normal((batch, dims)), jnp.float32)

    def g(x, noise, scale):
        h = jax.nn.relu(x @ (w1 * scale) + b1)
        out = h @ w2 + b2
        return out[:, :dims] + jnp.exp(jnp.tanh(out[:, dims:])) * noise

    return (lambda x: g(x, noise, 1.0)), jnp.zeros((batch, dims), jnp.float32), 1, g


def cumulative(length=16, batch=4, seed=1, gain=0.8):
    """x_t = sin(x_0 + ... + x_{t−1}) · gain + c_t: every position reads all earlier ones,
    triangular along axis 0 of ``(length, batch)``."""
    c = jnp.asarray(np.random.default_rng(seed).standard_normal((length, batch)), jnp.float32)

    def f(x):
        s = jnp.cumsum(x, axis=0)
        return jnp.concatenate([c[:1], jnp.sin(s[:-1]) * gain + c[1:]], axis=0)

    return f, jnp.zeros((length, batch), jnp.float32), 0


CASES = {
    "made": lambda: made()[:3],
    "made_wide": lambda: made(dims=24, batch=5, hidden=64, seed=3)[:3],
    "cumulative": lambda: cumulative(),
    "cumulative_long": lambda: cumulative(length=40, batch=3, seed=2, gain=0.5),
}


def loop(f, x0, axis):
    """The sequential reference: one position per call of the jitted f, in a Python loop."""
    f = jax.jit(f)
    x = x0
    for t in range(x0.shape[axis]):
        at = (slice(None),) * axis + (slice(t, t + 1),)
        x = x.at[at].set(f(x)[at])
    return np.asarray(x)


def jitted(f, x0, method, **kw):
    """The whole SolveResult of ``ffsolve.solve`` under ``jax.jit`` (a pytree)."""
    return jax.jit(lambda x: ffsolve.solve(f, x, method, **kw))(x0)


def assert_same_run(got, python, where):
    """A compiled (jitted) result against the Python driver's: x bit for bit, the same calls,
    stop, convergence and last change."""
    assert np.array_equal(np.asarray(got.x), np.asarray(python.x)), where
    assert int(got.iterations) == python.iterations, (where, int(got.iterations), python.iterations)
    stopped = got.stopped_by  # a code where the run decided it under jit, else the name
    assert (stopped if isinstance(stopped, str) else ffsolve.STOPPED_BY[int(stopped)]) == (
        python.stopped_by), where
    assert bool(got.converged) == python.converged, where
    if python.final_change is None:
        assert got.final_change is None, where
    else:
        assert float(got.final_change) == python.final_change, where
    assert float(got.causality_violation) == python.causality_violation == 0.0, where


# ---------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("method", METHODS)
def test_jitted_solve_equals_the_loop_and_the_python_driver(method):
    stops = set()
    for case, make in CASES.items():
        f, x0, axis = make()
        length = x0.shape[axis]
        reference = loop(f, x0, axis)
        blocks = [None] if method in ("sequential", "jacobi") else [None, 1, 3]
        for block_size in blocks:
            where = (case, method, block_size)
            python = ffsolve.solve(jax.jit(f), x0, method, block_size=block_size, axis=axis)
            got = jitted(f, x0, method, block_size=block_size, axis=axis)
            assert isinstance(got, ffsolve.SolveResult)
            assert isinstance(got.iterations, jax.Array)  # under jit: a JAX scalar
            assert np.array_equal(np.asarray(got.x), reference), where
            assert_same_run(got, python, where)
            assert 1 <= int(got.iterations) <= length, where
            assert got.network_evaluations == got.iterations
            assert (got.method, got.block_size, got.sequence_length) == (
                method, python.block_size, length)
            stops.add(python.stopped_by)
    # The cases stop in more than one way, so "the same stop" above is a real comparison.
    assert stops == {"sequential"} if method == "sequential" else len(stops) >= 2, stops


def test_an_f_closing_over_traced_weights_and_a_concrete_x0():
    _, x0, axis, g = made(seed=4)
    noise = jnp.asarray(np.random.default_rng(9).standard_normal(x0.shape), jnp.float32)
    for method in METHODS:
        got = jax.jit(lambda scale: ffsolve.solve(lambda x: g(x, noise, scale), x0, method,
                                                  axis=axis))(jnp.float32(0.7))
        python = ffsolve.solve(jax.jit(lambda x: g(x, noise, jnp.float32(0.7))), x0, method,
                               axis=axis)
        assert_same_run(got, python, method)


def test_jacobi_on_a_chain_needs_exactly_T_calls_under_jit():
    # Every call changes the last position still moving: stopped by the count bound at T.
    T = 9

    def chain(x):
        return jnp.concatenate([jnp.ones((1,), x.dtype), x[:-1] + 1])

    for method in ("jacobi", "jacobi_gs", "gs_jacobi"):
        got = jitted(chain, jnp.zeros(T, jnp.int32), method)
        python = ffsolve.solve(jax.jit(chain), jnp.zeros(T, jnp.int32), method)
        assert_same_run(got, python, method)
        assert np.array_equal(np.asarray(got.x), np.arange(1, T + 1))
        if method == "jacobi":
            assert int(got.iterations) == T and python.stopped_by == "exact_prefix"


def test_max_iters_stops_where_the_python_driver_stops():
    f, x0, axis = cumulative(length=20)
    for method in METHODS:
        for max_iters in (1, 3, 7):
            python = ffsolve.solve(jax.jit(f), x0, method, axis=axis, max_iters=max_iters)
            got = jitted(f, x0, method, axis=axis, max_iters=max_iters)
            assert_same_run(got, python, (method, max_iters))
            assert python.stopped_by == "max_iters" and not python.converged


# ---------------------------------------------------------------------------- tolerance


def test_tolerance_stops_where_the_python_driver_stops():
    f, x0, axis = cumulative(length=24, seed=5)
    fj = jax.jit(f)
    # Jacobi's change after each call (the Python driver's own numbers), and a call k whose
    # change is below every earlier one: tol = that change stops there, one float64 ulp less
    # must not (the float32 change against the float64 tol, decided as the Python driver does).
    changes = [ffsolve.solve(fj, x0, "jacobi", axis=axis, max_iters=k).final_change
               for k in range(1, 25)]
    k = next(i for i in range(2, len(changes))
             if 0 < changes[i] < min(changes[:i]) and changes[i] < 0.01)
    at = changes[k]
    below = float(np.nextafter(at, 0.0))
    assert np.float32(below) == np.float32(at)  # rounded to float32, the two tols are one
    tols = [at, below, 1e-3, 0.3]
    for method in ("jacobi", "gs_jacobi", "jacobi_gs"):
        for tol in tols:
            python = ffsolve.solve(fj, x0, method, axis=axis, tol=tol)
            got = jitted(f, x0, method, axis=axis, tol=tol)
            assert_same_run(got, python, (method, tol))
            assert int(got.iterations) <= x0.shape[axis]
    at_run = ffsolve.solve(fj, x0, "jacobi", axis=axis, tol=at)
    below_run = ffsolve.solve(fj, x0, "jacobi", axis=axis, tol=below)
    assert (at_run.iterations, at_run.stopped_by) == (k + 1, "tolerance")
    assert below_run.iterations > at_run.iterations  # the boundary is a real test


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int32, np.int8])
def test_the_threshold_decides_as_python_floats_do(dtype):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        values = rng.integers(0, np.iinfo(dtype).max, 200).astype(dtype)
        tols = [0.0, 0.5, 1.0, 3.7, 100.0, 1e30]
    else:
        values = np.abs(rng.standard_normal(200) * 10.0 ** rng.integers(-8, 3, 200)).astype(dtype)
        tols = [0.0, 0.1, 1e-7, 3.3e-5, 1e30] + [float(np.nextafter(float(v), 0.0))
                                                for v in values[:20]] + [float(v) for v in values[:20]]
    for tol in tols:
        compare, limit = compiled.threshold(tol, dtype)
        got = np.asarray(jnp.asarray(values).astype(compare) <= jnp.asarray(limit, compare))
        assert np.array_equal(got, np.array([float(v) <= tol for v in values])), (dtype, tol)


# ------------------------------------------------------------------------------- vmap


@pytest.mark.parametrize("method", METHODS)
def test_vmap_lanes_each_stop_by_their_own_rules(method):
    _, x0, axis, g = made(seed=6)
    rng = np.random.default_rng(7)
    noises = jnp.asarray(rng.standard_normal((4,) + x0.shape), jnp.float32)
    scales = jnp.asarray([1.0, 0.3, 0.0, 2.0], jnp.float32)  # 0: no dependence, fast to stop
    lanes = jax.vmap(lambda n, s: ffsolve.solve(lambda x: g(x, n, s), x0, method, axis=axis))(
        noises, scales)
    counts = []
    for i in range(4):
        python = ffsolve.solve(jax.jit(lambda x, i=i: g(x, noises[i], scales[i])), x0, method,
                               axis=axis)
        lane = jax.tree_util.tree_map(lambda a, i=i: a[i], lanes)
        assert_same_run(lane, python, (method, i))
        counts.append(python.iterations)
    if method != "sequential":
        assert len(set(counts)) > 1, counts  # lanes stopped at different calls


# -------------------------------------------------------------------- what the host needs


def test_options_that_need_the_host_are_refused_under_jit_naming_them(monkeypatch):
    f, x0, axis = cumulative(length=6)

    def under_jit(**kw):
        return jax.jit(lambda x: ffsolve.solve(f, x, axis=axis, **kw).x)(x0)

    for kw, name in [(dict(trace=True), "trace=True"),
                     (dict(trace=True, trace_batch_axis=1), "trace=True"),
                     (dict(deadline=1e30), "deadline="),
                     (dict(method="auto"), "method='auto'"),
                     (dict(compiled=False), "compiled=False")]:
        with pytest.raises(ValueError, match=name.replace("(", r"\(")) as err:
            under_jit(**kw)
        assert "jax.jit" in str(err.value), kw
    with pytest.raises(ValueError, match="method='auto'"):
        jax.vmap(lambda x: ffsolve.solve(f, x, "auto", axis=axis).x)(jnp.stack([x0, x0]))

    def mine(f, x0, **kw):
        raise AssertionError("a registered Python method must not run under jit")

    from ffsolve.solvers import core

    monkeypatch.setitem(core._SOLVERS, "mine", mine)
    with pytest.raises(ValueError, match="method 'mine' has no compiled driver"):
        under_jit(method="mine")
    # compiled=True asks for the program on concrete arrays: JAX only, no host options.
    with pytest.raises(ValueError, match="compiled=True .* needs JAX arrays"):
        ffsolve.solve(lambda x: x, np.zeros(3), compiled=True)
    with pytest.raises(ValueError, match="trace=True cannot be used with compiled=True"):
        ffsolve.solve(f, x0, axis=axis, trace=True, compiled=True)
    with pytest.raises(ValueError, match="compiled must be None, True or False"):
        ffsolve.solve(f, x0, axis=axis, compiled="yes")
    with pytest.raises(ValueError, match="method='auto' takes no compiled"):
        ffsolve.solve(f, x0, "auto", axis=axis, compiled=True)


def test_a_map_that_is_not_triangular_is_reported_in_the_jitted_result():
    _, x0, axis = cumulative(length=8)

    def wrong(x):  # position t reads itself: the cumulative sum without its shift
        return jnp.sin(jnp.cumsum(x, axis=0)) * 0.8 + 1.0

    with pytest.warns(ffsolve.NotTriangularWarning):
        python = ffsolve.solve(jax.jit(wrong), x0, "jacobi", axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from inside the program (no host callback)
        got = jitted(wrong, x0, "jacobi", axis=axis)
    assert python.causality_violation > 0 and not python.converged
    assert float(got.causality_violation) == python.causality_violation
    assert not bool(got.converged)
    assert np.array_equal(np.asarray(got.x), np.asarray(python.x))


# -------------------------------------------------------------------------- compiled=True


def test_compiled_true_on_concrete_arrays_gives_python_values_and_fresh_weights():
    _, x0, axis, g = made(seed=8)
    noise = jnp.ones(x0.shape, jnp.float32)
    for scale in (1.0, 0.5):  # the same jaxpr, new weights: the cached program takes them
        w = jnp.float32(scale)
        for method in METHODS:
            python = ffsolve.solve(jax.jit(lambda x: g(x, noise, w)), x0, method, axis=axis)
            got = ffsolve.solve(lambda x: g(x, noise, w), x0, method, axis=axis, compiled=True)
            assert isinstance(got.iterations, int) and isinstance(got.stopped_by, str)
            assert isinstance(got.converged, bool)
            assert_same_run(got, python, (scale, method))


def test_gradients_under_jit_equal_the_eager_ones():
    _, x0, axis, g = made(seed=10)
    noise = jnp.asarray(np.random.default_rng(11).standard_normal(x0.shape), jnp.float32)

    def loss(scale):
        return ffsolve.solve(lambda x: g(x, noise, scale), x0, "jacobi", axis=axis).x.sum()

    eager = jax.grad(loss)(jnp.float32(1.0))
    assert float(eager) != 0
    np.testing.assert_allclose(float(jax.jit(jax.grad(loss))(jnp.float32(1.0))), float(eager),
                               rtol=1e-5)


# ------------------------------------------------------------------------------ benchmark


@pytest.mark.slow
def test_the_benchmark_script_runs_and_its_three_programs_agree(repo_root):
    out = subprocess.run([sys.executable, "benchmarks/jax_driver.py", "--quick"], cwd=repo_root,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical x: True, same steps: True" in out.stdout
    assert "(a)/(b) per step" in out.stdout
