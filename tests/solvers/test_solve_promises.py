"""What ffsolve.solve promises beyond the fixed point: it says what stopped it, it notices a map
that is not triangular along the axis, and it refuses what it cannot do instead of failing late."""

import time
import warnings

import numpy as np
import pytest
import torch

import ffsolve

T, BATCH = 40, 3


def _chain():
    rng = np.random.default_rng(0)
    weights = np.tril(rng.standard_normal((T, T)), -1) / np.sqrt(T)
    noise = rng.standard_normal((T, BATCH))
    return lambda x: np.tanh(weights @ x) + 0.1 * noise


@pytest.mark.parametrize("method", ["jacobi", "gs_jacobi", "jacobi_gs"])
def test_every_result_says_what_stopped_it(method):
    f = _chain()
    x0 = np.zeros((T, BATCH))
    res = ffsolve.solve(f, x0, method)
    assert res.converged and res.stopped_by in ("fixed_point", "exact_prefix")
    assert res.final_change is not None and res.causality_violation == 0.0
    cut = ffsolve.solve(f, x0, method, max_iters=2)
    assert not cut.converged and cut.stopped_by == "max_iters" and cut.iterations == 2
    loose = ffsolve.solve(f, x0, method, tol=1e-3)
    assert loose.stopped_by in ("tolerance", "exact_prefix", "fixed_point")
    seq = ffsolve.solve(f, x0, "sequential")
    assert seq.stopped_by == "sequential" and seq.final_change is None


def test_a_deadline_stops_between_calls():
    res = ffsolve.solve(_chain(), np.zeros((T, BATCH)), "jacobi", deadline=time.perf_counter())
    assert res.iterations == 1 and res.stopped_by == "deadline" and not res.converged


def test_a_map_without_its_causal_shift_is_reported_not_converged():
    rng = np.random.default_rng(1)
    weights = np.tril(rng.standard_normal((T, T))) * 0.5 / np.sqrt(T)  # diagonal kept: reads x_t

    with pytest.warns(ffsolve.NotTriangularWarning, match="not triangular along axis 0"):
        res = ffsolve.solve(lambda x: np.tanh(weights @ x) + 1.0, np.zeros((T, BATCH)), "jacobi")
    assert not res.converged and res.causality_violation > 0


def test_the_wrong_axis_is_reported():
    # Tokens of a (batch, T) array, solved along axis 0 by mistake.
    rng = np.random.default_rng(2)
    weights = np.tril(rng.standard_normal((T, T)), -1)

    def f(x):  # triangular along axis 1
        return np.sign(x @ weights.T + 0.3)

    x0 = np.zeros((BATCH, T))
    right = ffsolve.solve(f, x0, "jacobi", axis=1)
    assert right.converged and right.causality_violation == 0
    with pytest.warns(ffsolve.NotTriangularWarning):
        wrong = ffsolve.solve(f, x0, "jacobi", axis=0)
    assert not wrong.converged


def test_a_correct_map_never_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ffsolve.NotTriangularWarning)
        for method in ("jacobi", "gs_jacobi", "jacobi_gs"):
            assert ffsolve.solve(_chain(), np.zeros((T, BATCH)), method).converged


def test_gradients_and_tuples_are_refused_with_a_message():
    w = torch.randn(T, T, requires_grad=True)
    f = lambda x: torch.tanh(torch.tril(w, -1) @ x)  # noqa: E731
    with pytest.raises(RuntimeError, match="does not propagate gradients yet"):
        ffsolve.solve(f, torch.zeros(T, BATCH), "jacobi")
    with torch.no_grad():
        assert ffsolve.solve(f, torch.zeros(T, BATCH), "jacobi").converged
    with pytest.raises(ValueError, match="f returned a tuple of 2 items"):
        ffsolve.solve(lambda x: (x, x), np.zeros((T, BATCH)), "jacobi")
