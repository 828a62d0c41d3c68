"""suffix_jacobi and sliding_jacobi (ffsolve.solvers.sliding): the sequential result bit for bit
in at most T steps, less work with a window evaluator, the window contract checked."""

import warnings

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.solvers import sliding

T, B, H = 29, 3, 5


def _masked_map(seed=0):
    """A random triangular map along axis 0 of (T, B, H): x_t = tanh(sum_{s<t} W_ts x_s + c_t),
    with a window evaluator that computes only rows [start, stop) (the same rows of the same
    products, so the same bits)."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(T, T, generator=generator, dtype=torch.float64).tril(-1) * 0.3
    offsets = torch.randn(T, B, H, generator=generator, dtype=torch.float64)

    def rows(x, start, stop):
        mixed = torch.einsum("ts,sbh->tbh", weights[start:stop], x)
        return torch.tanh(mixed + offsets[start:stop])

    return (lambda x: rows(x, 0, T)), rows


@pytest.fixture
def problem():
    f, rows = _masked_map()
    return f, sliding.windowed(f, rows), torch.zeros(T, B, H, dtype=torch.float64)


@pytest.mark.parametrize("method,block", [("suffix_jacobi", None), ("sliding_jacobi", 1),
                                          ("sliding_jacobi", 4), ("sliding_jacobi", T)])
def test_exact_with_and_without_a_window_in_at_most_T_steps(problem, method, block):
    f, windowed_f, x0 = problem
    reference = ffsolve.solve(f, x0, method="sequential").x
    for fn in (f, windowed_f):
        res = ffsolve.solve(fn, x0, method=method, block_size=block)
        assert torch.equal(res.x, reference), (method, block, fn is f)
        assert res.converged and res.iterations <= T
        assert res.causality_violation == 0.0


def test_suffix_jacobi_takes_jacobis_steps_at_most_and_does_less_work(problem):
    f, windowed_f, x0 = problem
    jacobi = ffsolve.solve(f, x0, method="jacobi")
    plain = ffsolve.solve(f, x0, method="suffix_jacobi")
    suffix = ffsolve.solve(windowed_f, x0, method="suffix_jacobi")
    assert suffix.iterations == plain.iterations <= jacobi.iterations
    assert plain.network_evaluations == plain.iterations  # no window: a full pass per step
    # Each step computes the positions from its start on, and the start grows by at least one.
    assert sum(T - k for k in range(suffix.iterations)) / T >= suffix.network_evaluations
    assert suffix.network_evaluations < 0.8 * suffix.iterations


def test_sliding_window_of_one_is_the_one_position_loop(problem):
    _, windowed_f, x0 = problem
    res = ffsolve.solve(windowed_f, x0, method="sliding_jacobi", block_size=1)
    assert res.iterations == T and res.network_evaluations == pytest.approx(1.0)


def test_sequential_computes_one_position_per_step_through_a_bitwise_window(problem):
    """The loop a user would write: call t computes only position t (one pass of work in all),
    and its result is the whole-map loop's bit for bit, so every method stays bitwise to it."""
    f, windowed_f, x0 = problem
    calls = []

    def counted(x, start, stop):
        calls.append((start, stop))
        return windowed_f.window(x, start, stop)

    one_position = sliding.windowed(f, counted)
    res = ffsolve.solve(one_position, x0, method="sequential")
    whole = ffsolve.solve(f, x0, method="sequential")
    assert calls == [(t, t + 1) for t in range(T)]
    assert torch.equal(res.x, whole.x)
    assert res.iterations == whole.iterations == T
    # One pass for the loop, one call of f on the result to check the bitwise declaration.
    assert res.network_evaluations == pytest.approx(2.0) and whole.network_evaluations == T
    assert res.final_change == 0.0
    assert torch.equal(ffsolve.solve(one_position, x0, method="jacobi").x, res.x)


def test_a_window_wrongly_declared_bitwise_is_caught_by_sequential(problem):
    f, rows = _masked_map()
    off_by_rounding = sliding.windowed(f, lambda x, start, stop: rows(x, start, stop) * (1 + 1e-12))
    x0 = torch.zeros(T, B, H, dtype=torch.float64)
    with pytest.warns(ffsolve.NotBitwiseWarning, match="bitwise=False"):
        res = ffsolve.solve(off_by_rounding, x0, method="sequential")
    assert res.final_change > 0 and res.iterations == T


def test_sequential_calls_the_whole_map_when_the_window_is_not_bitwise(problem):
    f, rows = _masked_map()
    calls = []

    def counted(x, start, stop):
        calls.append((start, stop))
        return rows(x, start, stop)

    declared = sliding.windowed(f, counted, bitwise=False)
    res = ffsolve.solve(declared, torch.zeros(T, B, H, dtype=torch.float64), method="sequential")
    assert calls == [] and res.network_evaluations == T
    with pytest.raises(ValueError, match="bitwise"):
        sliding.windowed(f, rows, bitwise="yes")


def test_window_cost_is_the_maps_own_when_given(problem):
    f, rows = _masked_map()
    costly = sliding.windowed(f, rows, cost=lambda start, stop: 2.0)
    res = ffsolve.solve(costly, torch.zeros(T, B, H, dtype=torch.float64), method="suffix_jacobi")
    assert res.network_evaluations == 2.0 * res.iterations


def test_a_window_of_the_wrong_shape_is_refused_naming_it(problem):
    f, rows = _masked_map()
    bad = sliding.windowed(f, lambda x, start, stop: rows(x, start, stop)[:-1])
    with pytest.raises(ValueError, match=r"f.window\(x, 0, 29\) returned shape"):
        ffsolve.solve(bad, torch.zeros(T, B, H, dtype=torch.float64), method="suffix_jacobi")


def test_a_window_that_lies_gives_a_different_answer_so_the_contract_matters(problem):
    f, rows = _masked_map()
    stale = sliding.windowed(f, lambda x, start, stop: rows(torch.zeros_like(x), start, stop))
    x0 = torch.zeros(T, B, H, dtype=torch.float64)
    assert not torch.equal(ffsolve.solve(stale, x0, method="suffix_jacobi").x,
                           ffsolve.solve(f, x0, method="sequential").x)


def test_without_a_window_a_non_triangular_map_is_still_caught():
    def peeks_ahead(x):  # position t reads position t + 1
        return np.tanh(np.roll(x, -1, axis=0) + 1.0)

    for method in ("suffix_jacobi", "sliding_jacobi"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = ffsolve.solve(peeks_ahead, np.zeros(12), method=method, block_size=None
                                if method == "suffix_jacobi" else 3)
        assert res.causality_violation > 0 and not res.converged, method
        assert any(issubclass(w.category, ffsolve.NotTriangularWarning) for w in caught)


def test_tolerance_stops_once_the_window_settles_within_tol(problem):
    f, windowed_f, x0 = problem
    res = ffsolve.solve(windowed_f, x0, method="suffix_jacobi", tol=1e-3)
    exact = ffsolve.solve(f, x0, method="sequential").x
    assert res.stopped_by in ("tolerance", "exact_prefix")
    assert float((res.x - exact).abs().max()) < 1e-2


def test_windowed_refuses_non_callables():
    with pytest.raises(ValueError, match="two callables"):
        sliding.windowed(lambda x: x, None)


def test_the_sliding_benchmark_runs_and_checks_every_run(repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sliding_benchmark",
                                                  repo_root / "benchmarks" / "sliding_benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = script.main(["--quick"])
    for run in ("| sequential |", "| jacobi |", "| suffix_jacobi |", "| sliding_jacobi_b8 |",
                "| sequential_loop |", "| sequential_whole_map |"):
        assert run in text
    assert "| NO |" not in text and "bitwise" in text
    # solve_recurrence's frontier, in both frameworks: the loop, Jacobi with and without it, the
    # framework's kernel; Jacobi with the frontier computes less than plain Jacobi, same steps.
    for framework in ("PyTorch", "JAX"):
        table = text.split(f"gru_T64_H4: solve_recurrence's frontier ({framework}")[1].split("###")[0]
        rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table.splitlines()
                if line.startswith("| ") and not line.startswith("| run")}
        assert set(rows) == {"sequential", "jacobi", "plain_jacobi", "sequential_native"}
        assert rows["jacobi"][0] == rows["plain_jacobi"][0]  # iterations
        assert float(rows["jacobi"][1]) < float(rows["plain_jacobi"][1]) == float(rows["jacobi"][0])
        assert all(row[-1].strip() == "bitwise" for name, row in rows.items()
                   if name != "sequential_native")
