"""Tests of ``ffsolve.solve``: the contract every method must keep, in NumPy, PyTorch and JAX.

The contract (see ``ffsolve.solvers.core.solve``): for a triangular map ``f`` along ``axis``
(output position t depends only on input positions < t), every method with ``tol=0`` returns the
``sequential`` result bit for bit, in at most T calls of ``f``, never modifies ``x0``, and returns
an array of the same type. Stopping early (``max_iters``) keeps every position the triangular
argument has already fixed, and says ``converged=False``.

Random triangular maps come from :class:`Problem`; the array library from :class:`Backend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ffsolve
from ffsolve.solvers import core

METHODS = ["sequential", "jacobi", "gs_jacobi", "jacobi_gs"]
BLOCK_METHODS = ["gs_jacobi", "jacobi_gs"]

# Hypothesis budget: modest, the whole file must stay fast on two shared cores.
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(PROPERTY, max_examples=20)


# --------------------------------------------------------------------------------------------
# Array libraries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """The handful of operations the test maps need, for one array library."""

    name: str
    dtype: Any
    asarray: Callable  # NumPy array -> library array (of ``dtype``)
    to_numpy: Callable  # library array -> NumPy array
    tanh: Callable
    sin: Callable
    concat: Callable  # (list of arrays) -> concatenation along axis 0
    moveaxis: Callable  # (a, source, destination)
    rtol: float  # for comparisons that are not bit-exact (tol > 0, trace norms)

    def __repr__(self) -> str:  # readable test ids and hypothesis reports
        return self.name


def _jax_dtype():
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


BACKENDS = [
    Backend(
        name="numpy",
        dtype=np.float64,
        asarray=lambda a: np.array(a, dtype=np.float64),
        to_numpy=lambda a: np.asarray(a),
        tanh=np.tanh,
        sin=np.sin,
        concat=lambda parts: np.concatenate(parts, axis=0),
        moveaxis=np.moveaxis,
        rtol=1e-12,
    ),
    Backend(
        name="torch",
        dtype=torch.float64,
        asarray=lambda a: torch.tensor(np.asarray(a), dtype=torch.float64),
        to_numpy=lambda a: a.detach().cpu().numpy(),
        tanh=torch.tanh,
        sin=torch.sin,
        concat=lambda parts: torch.cat(parts, dim=0),
        moveaxis=torch.movedim,
        rtol=1e-12,
    ),
    Backend(
        name="jax",
        dtype=_jax_dtype(),
        asarray=lambda a: jnp.asarray(np.asarray(a), dtype=_jax_dtype()),
        to_numpy=lambda a: np.asarray(a),
        tanh=jnp.tanh,
        sin=jnp.sin,
        concat=lambda parts: jnp.concatenate(parts, axis=0),
        moveaxis=jnp.moveaxis,
        rtol=1e-12 if _jax_dtype() == jnp.float64 else 1e-5,
    ),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request) -> Backend:
    return request.param


# --------------------------------------------------------------------------------------------
# Random triangular maps
# --------------------------------------------------------------------------------------------

# (shape of x0 given T and two batch sizes, axis holding the T positions)
LAYOUTS = [
    (lambda T, b, c: (T,), 0),
    (lambda T, b, c: (T,), -1),
    (lambda T, b, c: (T, b), 0),
    (lambda T, b, c: (T, b), -2),
    (lambda T, b, c: (b, T), 1),
    (lambda T, b, c: (b, T), -1),
    (lambda T, b, c: (b, T, c), 1),
]

KINDS = ["dense", "linear", "chain", "constant"]


@dataclass
class Problem:
    """A random triangular map along ``axis`` of arrays shaped ``shape``, and an initial guess.

    Kinds (written with the positions on axis 0; ``f`` moves ``axis`` there and back):
      * ``dense``:    y = tanh(L @ x + b), L strictly lower triangular;
      * ``linear``:   y_0 = b_0, y_t = a_t * x_{t-1} + b_t;
      * ``chain``:    y_0 = c_0, y_t = x_{t-1} + 0.5 sin(x_{t-1}) + c_t (each position only
        reads the one before: the worst case for Jacobi);
      * ``constant``: y = c (no dependencies at all).
    ``contraction`` scales dense/linear maps to a q = 1/2 contraction in the max norm (used by the
    tol > 0 bounds).
    """

    backend: Backend
    kind: str
    T: int
    shape: tuple
    axis: int
    seed: int
    contraction: bool = False

    def __post_init__(self):
        bk, T = self.backend, self.T
        rng = np.random.default_rng(self.seed)
        ax = self.axis % len(self.shape)
        moved = (T,) + tuple(s for i, s in enumerate(self.shape) if i != ax)
        self.moved_shape = moved
        if self.kind == "dense":
            L = np.tril(rng.normal(size=(T, T)), k=-1)
            if self.contraction:
                rows = np.abs(L).sum(axis=1, keepdims=True)
                L = 0.5 * L / np.maximum(rows, 1e-12)
            self.L = bk.asarray(L)
            self.b = bk.asarray(rng.normal(size=moved))
        elif self.kind == "linear":
            scale = 0.5 if self.contraction else 1.5
            self.a = bk.asarray(rng.uniform(-scale, scale, size=moved))
            self.b = bk.asarray(rng.normal(size=moved))
        elif self.kind in ("chain", "constant"):
            self.c = bk.asarray(rng.normal(size=moved))
        else:  # pragma: no cover
            raise AssertionError(self.kind)
        self.x0_numpy = rng.normal(size=self.shape) * 2.0
        self.calls = 0

    def x0(self):
        return self.backend.asarray(self.x0_numpy)

    def _g(self, x):  # positions on axis 0
        bk, T = self.backend, self.T
        if self.kind == "dense":
            flat = self.L @ x.reshape(T, -1)
            return bk.tanh(flat.reshape(self.moved_shape) + self.b)
        if self.kind == "linear":
            return bk.concat([self.b[:1], self.a[1:] * x[:-1] + self.b[1:]])
        if self.kind == "chain":
            prev = x[:-1]
            return bk.concat([self.c[:1], prev + 0.5 * bk.sin(prev) + self.c[1:]])
        return self.c * 1.0  # a fresh array every call

    def f(self, x):
        self.calls += 1
        mv = self.backend.moveaxis
        return mv(self._g(mv(x, self.axis, 0)), 0, self.axis)

    def positions(self, a: np.ndarray, stop: Optional[int] = None) -> np.ndarray:
        """NumPy view of ``a`` with the T positions first (the first ``stop`` of them)."""
        return np.moveaxis(a, self.axis, 0)[:stop]


# JAX compiles every operation afresh for each new shape or slice (a tenth of a second or more
# each), so its examples are drawn from a small set of sizes that the compilation cache soon
# covers; NumPy and PyTorch get the full range.
JAX_T = [1, 2, 9]
JAX_LAYOUTS = [LAYOUTS[0], LAYOUTS[2], LAYOUTS[5]]


@st.composite
def problem_specs(draw, backend, kinds=("dense", "linear", "chain"), max_T=40):
    if backend.name == "jax":
        T = draw(st.sampled_from([t for t in JAX_T if t <= max_T]), label="T")
        shape_of, axis = draw(st.sampled_from(JAX_LAYOUTS), label="layout")
        b = c = 2
    else:
        T = draw(st.integers(1, max_T), label="T")
        shape_of, axis = draw(st.sampled_from(LAYOUTS), label="layout")
        b, c = draw(st.integers(1, 3), label="b"), draw(st.integers(1, 3), label="c")
    kind = draw(st.sampled_from(kinds), label="kind")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    return dict(kind=kind, T=T, shape=shape_of(T, b, c), axis=axis, seed=seed)


def block_sizes(backend, T):
    if backend.name == "jax":
        return st.sampled_from([1, 2, 4, T + 3])
    return st.integers(1, T + 3)


@st.composite
def method_and_block(draw, backend, T):
    method = draw(st.sampled_from(METHODS), label="method")
    if method in BLOCK_METHODS:
        block = draw(st.one_of(st.none(), block_sizes(backend, T)), label="block_size")
    else:
        block = None
    return method, block


def default_block(T: int) -> int:
    return math.ceil(math.sqrt(T))


def assert_bit_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a, b), f"max |diff| = {np.max(np.abs(a - b))}"


# --------------------------------------------------------------------------------------------
# 1. tol = 0: every method is the sequential computation, bit for bit
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_exact_result_equals_sequential(backend, data):
    prob = Problem(backend, **data.draw(problem_specs(backend), label="problem"))
    T = prob.T
    method, block = data.draw(method_and_block(backend, T))
    x0 = prob.x0()

    ref = ffsolve.solve(prob.f, x0, method="sequential", axis=prob.axis)
    res = ffsolve.solve(prob.f, x0, method=method, block_size=block, axis=prob.axis)

    assert ref.iterations == T and ref.converged
    assert_bit_equal(backend.to_numpy(res.x), backend.to_numpy(ref.x))
    assert 1 <= res.iterations <= T
    assert res.converged is True
    assert type(res.x) is type(x0)
    assert tuple(res.x.shape) == tuple(x0.shape) and res.x.dtype == x0.dtype
    assert_bit_equal(backend.to_numpy(x0), prob.x0_numpy.astype(backend.to_numpy(x0).dtype))
    # The record describes the solve.
    assert res.method == method
    assert res.sequence_length == T
    assert res.tol == 0.0
    assert res.trace is None
    if method in BLOCK_METHODS:
        assert res.block_size == (default_block(T) if block is None else block)
    else:
        assert res.block_size is None


def test_jacobi_is_bit_exact_when_f_changes_the_memory_layout():
    """Regression (found by the property above): a map that permutes axes returns arrays laid
    out unlike its input, and PyTorch's matmul gives last-bit-different sums for different
    strides. Jacobi used to feed f's own output back to f, so its fixed point differed from
    sequential's by 1 ulp; every method must call f on arrays laid out like sequential's."""
    prob = Problem(BACKENDS[1], kind="dense", T=8, shape=(2, 8), axis=1, seed=0)
    x0 = prob.x0()
    ref = ffsolve.solve(prob.f, x0, "sequential", axis=1)
    for method in METHODS:
        res = ffsolve.solve(prob.f, x0, method, axis=1)
        assert_bit_equal(res.x.numpy(), ref.x.numpy())


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("transposed_x0", [False, True])
def test_every_method_calls_f_on_the_same_memory_layout(lib, transposed_x0):
    x0 = np.random.default_rng(1).normal(size=(6, 3))
    if transposed_x0:
        x0 = np.asfortranarray(x0)
    x0 = torch.from_numpy(x0) if lib == "torch" else x0

    def run(method):
        layouts = set()

        def f(x):  # positions on axis 1; the output comes back with transposed strides
            layouts.add(tuple(x.stride()) if lib == "torch" else x.strides)
            xt = x.T
            cat = torch.cat if lib == "torch" else np.concatenate
            out = cat([xt[:1] * 0.0 + 1.0, 0.5 * xt[:-1] + 1.0])
            return out.T

        ffsolve.solve(f, x0, method, axis=1)
        return layouts

    expected = run("sequential")
    assert len(expected) == 1
    for method in METHODS:
        assert run(method) == expected, method


@PROPERTY
@given(data=st.data())
def test_stopping_early_keeps_the_exact_prefix(backend, data):
    """After k calls the first k positions are final; converged is False until the end."""
    prob = Problem(backend, **data.draw(problem_specs(backend, KINDS), label="problem"))
    T = prob.T
    method, block = data.draw(method_and_block(backend, T))
    x0 = prob.x0()
    ref = backend.to_numpy(ffsolve.solve(prob.f, x0, "sequential", axis=prob.axis).x)
    full = ffsolve.solve(prob.f, x0, method, block_size=block, axis=prob.axis)
    k = data.draw(st.integers(1, T), label="max_iters")

    res = ffsolve.solve(prob.f, x0, method, block_size=block, max_iters=k, axis=prob.axis)

    got = backend.to_numpy(res.x)
    assert_bit_equal(prob.positions(got, k), prob.positions(ref, k))
    if k < full.iterations:
        assert res.iterations == k
        assert res.converged is False
    else:
        assert res.iterations == full.iterations
        assert res.converged is True
        assert_bit_equal(got, ref)
    assert type(res.x) is type(x0)
    assert_bit_equal(backend.to_numpy(x0), prob.x0_numpy.astype(got.dtype))


@FEW
@given(data=st.data())
def test_jacobi_on_a_chain_needs_every_call(backend, data):
    """Each Jacobi call fixes exactly one more position of a chain; it stops only at T calls
    (or earlier exactly when an iterate happens to repeat bit for bit)."""
    prob = Problem(backend, **data.draw(problem_specs(backend, ["chain"]), label="problem"))
    T = prob.T
    x0 = prob.x0()

    # Predict the count from the iterates themselves: Jacobi stops at the first call whose output
    # equals its input, and after T calls at the latest.
    expected, x = T, x0
    for k in range(1, T + 1):
        y = prob.f(x)
        if np.array_equal(backend.to_numpy(y), backend.to_numpy(x)):
            expected = k
            break
        x = y
    every_step_changes = expected == T

    prob.calls = 0
    res = ffsolve.solve(prob.f, x0, method="jacobi", axis=prob.axis)
    assert res.iterations == expected == prob.calls
    if every_step_changes:
        assert res.iterations == T
    assert res.converged


@pytest.mark.parametrize("T", [1, 2, 7, 40])
def test_jacobi_on_an_integer_chain_needs_exactly_T_calls(backend, T):
    """x_t = x_{t-1} + 1 from zeros: every call changes one more position, so T calls."""

    def f(x):
        return backend.concat([x[:1] * 0.0, x[:-1] + 1.0])

    res = ffsolve.solve(f, backend.asarray(np.zeros(T)), method="jacobi")
    assert res.iterations == T and res.converged
    assert_bit_equal(backend.to_numpy(res.x), np.arange(T, dtype=backend.to_numpy(res.x).dtype))


@PROPERTY
@given(data=st.data())
def test_maps_without_dependencies_converge_at_once(backend, data):
    """y = c: Jacobi needs one call to get there and one to see it; gs_jacobi about a call a
    block; jacobi_gs's first (full) step gets there as Jacobi does."""
    prob = Problem(backend, **data.draw(problem_specs(backend, ["constant"]), label="problem"))
    T = prob.T
    block = data.draw(block_sizes(backend, T), label="block_size")
    x0 = prob.x0()
    c = prob.f(x0)
    c_np = backend.to_numpy(c)

    jac = ffsolve.solve(prob.f, x0, "jacobi", axis=prob.axis)
    assert jac.iterations == (1 if T == 1 else 2)

    gsj = ffsolve.solve(prob.f, x0, "gs_jacobi", block_size=block, axis=prob.axis)
    blocks = math.ceil(T / block)
    if block == 1:
        # Every settled block also fixes the next single position: about every other block.
        assert math.ceil(T / 2) <= gsj.iterations <= T
    else:
        assert blocks <= gsj.iterations <= blocks + 1

    jgs = ffsolve.solve(prob.f, x0, "jacobi_gs", block_size=block, axis=prob.axis)
    assert jgs.iterations == (1 if T == 1 else 2)

    for res in (jac, gsj, jgs):
        assert res.converged
        assert_bit_equal(backend.to_numpy(res.x), c_np)


# --------------------------------------------------------------------------------------------
# 2. tol > 0
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=st.data(), tol=st.sampled_from([1e-8, 1e-6, 1e-4, 1e-2, 0.3]))
def test_tolerance_stops_no_later_and_close_to_sequential(backend, data, tol):
    spec = data.draw(problem_specs(backend, ["dense", "linear"]), label="problem")
    prob = Problem(backend, contraction=True, **spec)
    T = prob.T
    method, block = data.draw(method_and_block(backend, T))
    x0 = prob.x0()
    ref = backend.to_numpy(ffsolve.solve(prob.f, x0, "sequential", axis=prob.axis).x)
    exact = ffsolve.solve(prob.f, x0, method, block_size=block, axis=prob.axis)

    res = ffsolve.solve(prob.f, x0, method, block_size=block, tol=tol, axis=prob.axis)

    assert res.tol == tol
    assert res.converged
    assert 1 <= res.iterations <= exact.iterations <= T
    # f is a 1/2-contraction in the max norm, so stopping at a change <= tol leaves an error of a
    # few tol (2 tol for the fixed-point residual, plus the last partial write); 10 tol is loose.
    err = np.max(np.abs(backend.to_numpy(res.x) - ref))
    assert err <= 10 * tol + 10 * backend.rtol, (err, tol)
    assert type(res.x) is type(x0)


# --------------------------------------------------------------------------------------------
# 3. Bad arguments
# --------------------------------------------------------------------------------------------


def _ok_map(x):
    return np.concatenate([x[:1] * 0.0 + 1.0, 0.5 * x[:-1] + 1.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="newton"), r"method.*gs_jacobi.*jacobi.*jacobi_gs.*sequential"),
        (dict(method=None), r"method"),
        (dict(method="gs_jacobi", block_size=0), r"block_size"),
        (dict(method="gs_jacobi", block_size=-1), r"block_size"),
        (dict(method="jacobi_gs", block_size=2.5), r"block_size"),
        (dict(method="jacobi_gs", block_size=True), r"block_size"),
        (dict(method="gs_jacobi", block_size="2"), r"block_size"),
        (dict(method="jacobi", block_size=2), r"block_size"),
        (dict(method="sequential", block_size=1), r"block_size"),
        (dict(tol=-1e-3), r"tol"),
        (dict(tol=float("nan")), r"tol"),
        (dict(tol=float("inf")), r"tol"),
        (dict(tol=True), r"tol"),
        (dict(max_iters=0), r"max_iters"),
        (dict(max_iters=-3), r"max_iters"),
        (dict(max_iters=2.0), r"max_iters"),
        (dict(axis=2), r"axis"),
        (dict(axis=-3), r"axis"),
        (dict(axis=1.0), r"axis"),
        (dict(trace_batch_axis=1), r"trace_batch_axis"),  # without trace=True
        (dict(trace=True, trace_batch_axis=0), r"trace_batch_axis"),  # same as axis
        (dict(trace=True, trace_batch_axis=5), r"trace_batch_axis"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    x0 = np.zeros((6, 2))
    before = x0.copy()
    with pytest.raises(ValueError, match=match):
        ffsolve.solve(_ok_map, x0, **kwargs)
    assert_bit_equal(x0, before)


def test_bad_x0_and_f_raise_value_error_naming_them():
    with pytest.raises(ValueError, match=r"x0"):
        ffsolve.solve(_ok_map, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"x0"):
        ffsolve.solve(_ok_map, np.float64(1.0) * np.ones(()))
    with pytest.raises(ValueError, match=r"x0"):
        ffsolve.solve(_ok_map, np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\bf\b"):
        ffsolve.solve("not callable", np.zeros(4))


@pytest.mark.parametrize("method", METHODS)
def test_f_returning_the_wrong_shape_is_a_value_error(backend, method):
    x0 = backend.asarray(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"\bf\b.*shape"):
        ffsolve.solve(lambda x: x[:-1], x0, method=method)
    with pytest.raises(ValueError, match=r"\bf\b.*shape"):
        ffsolve.solve(lambda x: backend.moveaxis(x, 0, 1), x0, method=method)


# --------------------------------------------------------------------------------------------
# 4. Trace
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_trace_records_every_iterate(backend, data):
    prob = Problem(backend, **data.draw(problem_specs(backend), label="problem"))
    T = prob.T
    method, block = data.draw(method_and_block(backend, T))
    x0 = prob.x0()
    ref = backend.to_numpy(ffsolve.solve(prob.f, x0, "sequential", axis=prob.axis).x)
    max_iters = data.draw(st.one_of(st.none(), st.integers(1, T)), label="max_iters")

    prob.calls = 0
    res = ffsolve.solve(
        prob.f, x0, method, block_size=block, max_iters=max_iters, axis=prob.axis, trace=True
    )
    plain = ffsolve.solve(prob.f, x0, method, block_size=block, max_iters=max_iters, axis=prob.axis)
    n = res.iterations
    tr = res.trace

    assert isinstance(tr, ffsolve.SolveTrace)
    assert n == plain.iterations and res.converged == plain.converged
    assert_bit_equal(backend.to_numpy(res.x), backend.to_numpy(plain.x))
    assert tr.change.shape == (n,)
    assert tr.error.shape == (n + 1,)
    assert tr.iterates.shape == (n + 1,) + tuple(x0.shape)
    assert isinstance(tr.iterates, np.ndarray)
    assert_bit_equal(tr.iterates[0], prob.x0_numpy.astype(tr.iterates.dtype))
    assert_bit_equal(tr.iterates[-1], backend.to_numpy(res.x))
    assert tr.error[-1] == 0.0
    scale = 1.0 + np.linalg.norm(tr.iterates.astype(np.float64).reshape(n + 1, -1), axis=1).max()
    for k in range(n + 1):
        it = tr.iterates[k].astype(np.float64)
        if k >= 1:
            step = it - tr.iterates[k - 1].astype(np.float64)
            np.testing.assert_allclose(
                tr.change[k - 1], np.linalg.norm(step.ravel()),
                rtol=backend.rtol, atol=backend.rtol * scale,
            )
        # (the trace subtracts in x0's dtype: float32 for JAX by default)
        np.testing.assert_allclose(
            tr.error[k], np.linalg.norm((it - tr.iterates[-1]).ravel()),
            rtol=backend.rtol, atol=backend.rtol * scale,
        )
        # The prefix guarantee holds for every intermediate iterate too.
        assert_bit_equal(
            prob.positions(tr.iterates[k], k), prob.positions(ref.astype(tr.iterates.dtype), k)
        )


@FEW
@given(data=st.data())
def test_trace_per_batch_item(backend, data):
    prob = Problem(backend, **data.draw(problem_specs(backend, max_T=20), label="problem"))
    x0 = prob.x0()
    ndim = x0.ndim
    others = [i for i in range(ndim) if i != prob.axis % ndim]
    if not others:  # no batch axis to report along
        with pytest.raises(ValueError, match="trace_batch_axis"):
            ffsolve.solve(prob.f, x0, axis=prob.axis, trace=True, trace_batch_axis=prob.axis)
        return
    batch_axis = data.draw(st.sampled_from(others + [i - ndim for i in others]), label="batch")
    method, block = data.draw(method_and_block(backend, prob.T))

    res = ffsolve.solve(
        prob.f, x0, method, block_size=block, axis=prob.axis, trace=True,
        trace_batch_axis=batch_axis,
    )
    whole = ffsolve.solve(prob.f, x0, method, block_size=block, axis=prob.axis, trace=True)
    n, batch = res.iterations, x0.shape[batch_axis]
    tr = res.trace

    assert tr.change.shape == (n, batch)
    assert tr.error.shape == (n + 1, batch)
    assert tr.iterates.shape == (n + 1,) + tuple(x0.shape)
    assert np.all(tr.error[-1] == 0.0)
    its = tr.iterates.astype(np.float64)
    tols = dict(rtol=backend.rtol, atol=backend.rtol * (1.0 + np.abs(its).max() * its[0].size))
    for j in range(batch):
        item = np.take(its, j, axis=1 + batch_axis % ndim)  # (n + 1, ...) for batch item j
        steps = np.linalg.norm((item[1:] - item[:-1]).reshape(n, -1), axis=1)
        np.testing.assert_allclose(tr.change[:, j], steps, **tols)
        errors = np.linalg.norm((item - item[-1]).reshape(n + 1, -1), axis=1)
        np.testing.assert_allclose(tr.error[:, j], errors, **tols)
    # Per-item norms add up (in squares) to the whole-array norms.
    np.testing.assert_allclose(np.sqrt((tr.change**2).sum(axis=1)), whole.trace.change, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt((tr.error**2).sum(axis=1)), whole.trace.error, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# 5. Registry
# --------------------------------------------------------------------------------------------


def test_available_methods_lists_the_four():
    methods = ffsolve.available_methods()
    assert set(METHODS) <= set(methods)
    assert methods == sorted(methods)
    for name in METHODS:
        assert callable(ffsolve.get_solver(name))


def test_get_solver_of_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="nope") as err:
        ffsolve.get_solver("nope")
    for name in METHODS:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="method"):
        ffsolve.get_solver(["jacobi"])  # unhashable: still a ValueError


def test_register_solver_rejects_existing_and_empty_names(monkeypatch):
    monkeypatch.setattr(core, "_SOLVERS", dict(core._SOLVERS))
    monkeypatch.setattr(core, "_USES_BLOCKS", set(core._USES_BLOCKS))
    for name in METHODS:
        with pytest.raises(ValueError, match=name):
            ffsolve.register_solver(name, ffsolve.get_solver("jacobi"))
    with pytest.raises(ValueError, match="name"):
        ffsolve.register_solver("", ffsolve.get_solver("jacobi"))
    with pytest.raises(ValueError, match="name"):
        ffsolve.register_solver(3, ffsolve.get_solver("jacobi"))


def test_registered_solver_is_used_by_solve(monkeypatch):
    monkeypatch.setattr(core, "_SOLVERS", dict(core._SOLVERS))
    monkeypatch.setattr(core, "_USES_BLOCKS", set(core._USES_BLOCKS))
    seen = {}

    def mine(f, x0, **kwargs):
        seen.update(kwargs)
        return ffsolve.get_solver("sequential")(f, x0, **kwargs)

    ffsolve.register_solver("mine", mine)
    assert "mine" in ffsolve.available_methods()
    res = ffsolve.solve(_ok_map, np.zeros(5), method="mine", max_iters=3)
    assert seen["max_iters"] == 3 and seen["tol"] == 0.0 and seen["block_size"] is None
    assert seen["axis"] == 0
    assert res.iterations == 3 and not res.converged
    with pytest.raises(ValueError, match="block_size"):
        ffsolve.solve(_ok_map, np.zeros(5), method="mine", block_size=2)


# --------------------------------------------------------------------------------------------
# 6. iterations counts the calls of f
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=st.data(), tol=st.sampled_from([0.0, 0.0, 1e-6, 1e-2]))
def test_iterations_counts_the_calls_of_f(backend, data, tol):
    prob = Problem(backend, **data.draw(problem_specs(backend, KINDS), label="problem"))
    method, block = data.draw(method_and_block(backend, prob.T))
    max_iters = data.draw(st.one_of(st.none(), st.integers(1, prob.T + 2)), label="max_iters")
    prob.calls = 0
    res = ffsolve.solve(
        prob.f, prob.x0(), method, block_size=block, tol=tol, max_iters=max_iters,
        axis=prob.axis,
    )
    assert res.iterations == prob.calls
    assert res.iterations <= min(prob.T, max_iters or prob.T)
    if max_iters is not None and max_iters >= prob.T:
        assert res.converged


def test_docstring_example():
    f = lambda x: np.concatenate([[1.0], 0.5 * x[:-1] + 1.0])  # noqa: E731
    for method in METHODS:
        res = ffsolve.solve(f, np.zeros(8), method=method)
        assert res.x[-1] == 1.9921875 and res.iterations <= 8 and res.converged


def test_sequential_matches_a_plain_loop():
    """The reference itself: ``sequential`` is position-by-position evaluation."""
    prob = Problem(BACKENDS[0], kind="linear", T=30, shape=(30, 3), axis=0, seed=7)
    a, b = prob.a, prob.b
    expected = np.empty((30, 3))
    expected[0] = b[0]
    for t in range(1, 30):
        expected[t] = a[t] * expected[t - 1] + b[t]
    res = ffsolve.solve(prob.f, prob.x0(), "sequential")
    assert res.iterations == 30 and res.converged
    np.testing.assert_allclose(res.x, expected, rtol=1e-12)
