"""The RNN backprop model and its adjoint system: every method against PyTorch autograd and BPTT.

Data: scikit-learn's 8×8 digits read as sequences of T = 64 pixels (tiny hidden size), in float64
where a 1e-6 relative error should judge the method, not the rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments.rnn_backprop.experiment import dataset_sequences, relative_error, time_major
from ffsolve.experiments.rnn_backprop.model import (
    autograd_gradients,
    forward,
    init_params,
    load_checkpoint,
    save_checkpoint,
)
from ffsolve.experiments.rnn_backprop.system import (
    AdjointSystem,
    adjoint_system,
    backward,
    bptt,
    hillis_steele,
    scan_steps,
    scan_tolerance,
    solve_adjoints,
)
from ffsolve.kit import RunSpec
from ffsolve.recurrence import linear

HIDDEN = 12
T = 64


@pytest.fixture(scope="module")
def digits_batch() -> torch.Tensor:
    """Three digits as ``(64, 3, 1)`` float64 sequences in [0, 1]."""
    rows = dataset_sequences(load_digits_dataset(), "train", image_size=None)[:3]
    assert rows.shape == (3, T)
    return time_major(rows)


def make_params(seed: int = 0, std: float = 0.3, dtype=torch.float64):
    # A larger std than the paper's 0.1 so that adjoints do not die out within a few steps and a
    # truncated method has something to get wrong.
    return init_params(HIDDEN, std, torch.Generator().manual_seed(seed), dtype=dtype)


EXACT = ["sequential", "jacobi", "gs_jacobi_b5", "jacobi_gs_b7", "scan_hillis_steele", "scan_odd_even"]


@pytest.mark.parametrize("name", EXACT)
def test_exact_methods_match_autograd(digits_batch, name):
    from ffsolve.kit import parse_run_name

    params = make_params()
    result = backward(params, forward(params, digits_batch), parse_run_name(name))
    reference, loss = autograd_gradients(params, digits_batch)
    assert float(forward(params, digits_batch).loss) == pytest.approx(float(loss), rel=1e-12)
    # Per parameter: a small tensor (b_o) could hide inside the overall norm.
    for got, want in zip(result.grads.tensors(), reference.tensors()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-10)
    assert result.solve.converged and 1 <= result.solve.iterations <= T


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_library_method_at_tol_0_equals_bptt_bit_for_bit(digits_batch, dtype):
    """The map computes each position with BPTT's own per-step product, so Jacobi and the block
    methods reproduce hand-written BPTT exactly, not just closely."""
    params = make_params(dtype=dtype)
    system = adjoint_system(params, forward(params, digits_batch.to(dtype)))
    reference = bptt(system).x
    for spec in (RunSpec("jacobi"), RunSpec("gs_jacobi", 5), RunSpec("jacobi_gs", 7),
                 RunSpec("sequential", budget=T), RunSpec("jacobi", budget=10 * T)):
        result = solve_adjoints(system, spec)
        assert torch.equal(result.x, reference), spec
        assert result.converged and result.iterations <= T


def test_truncated_jacobi_has_exactly_the_last_k_adjoints_right(digits_batch):
    """After k Jacobi iterations the k latest adjoints are exact (bitwise), the one before is not;
    the run says it did not converge."""
    params = make_params()
    cache = forward(params, digits_batch)
    system = adjoint_system(params, cache)
    exact = bptt(system).x
    for k in (1, 5, 20):
        result = solve_adjoints(system, RunSpec("jacobi", budget=k))
        assert result.iterations == k and not result.converged
        assert torch.equal(result.x[T - k:], exact[T - k:])
        assert float((result.x[T - k - 1] - exact[T - k - 1]).abs().max()) > 1e-11
    reference, _ = autograd_gradients(params, digits_batch)
    truncated = backward(params, cache, RunSpec("jacobi", budget=5)).grads
    assert relative_error(truncated, reference) > 1e-3  # approximate, honestly so


def test_work_and_steps_are_counted_in_full_passes(digits_batch):
    params = make_params()
    system = adjoint_system(params, forward(params, digits_batch))
    seq = bptt(system)
    assert seq.iterations == T - 1 and seq.network_evaluations == pytest.approx((T - 1) / T)
    hs = hillis_steele(system)
    assert hs.iterations == math.ceil(math.log2(T)) == scan_steps(T, "scan_hillis_steele")
    # Step d: T − d row products, and T − d matrix products (H each) while 2d < T.
    expected = sum(T - d for d in (1, 2, 4, 8, 16, 32)) + HIDDEN * sum(T - d for d in (1, 2, 4, 8, 16))
    assert hs.network_evaluations == pytest.approx(expected / T)
    oe = solve_adjoints(system, RunSpec("scan_odd_even"))
    assert oe.iterations == scan_steps(T, "scan_odd_even") <= 2 * math.ceil(math.log2(T))
    assert HIDDEN * 0.9 < oe.network_evaluations < hs.network_evaluations


def test_jacobi_tolerance_is_relative_to_the_adjoint_scale(digits_batch):
    """The same sequence repeated 8 times has adjoints 8× smaller per item (the loss is a batch
    mean); a relative tolerance must stop after the same number of iterations, early."""
    params = make_params(std=0.1)
    one, many = digits_batch[:, :1], digits_batch[:, :1].repeat(1, 8, 1)
    spec = RunSpec("jacobi_tol")
    small = backward(params, forward(params, one), spec, relative_tol=1e-6).solve
    large = backward(params, forward(params, many), spec, relative_tol=1e-6).solve
    assert 1 < small.iterations < T and small.converged
    assert large.iterations == small.iterations
    assert small.tol > 0 and small.method == "jacobi_tol"


@pytest.mark.parametrize("length", [1, 2, 3, 5, 7, 16, 33])
def test_scans_solve_the_affine_recursion_for_any_length(length):
    generator = torch.Generator().manual_seed(length)
    gates = torch.rand(length, 2, 4, generator=generator, dtype=torch.float64)
    gates[0] = 0
    system = AdjointSystem(torch.randn(length, 2, 4, generator=generator, dtype=torch.float64),
                           gates, torch.randn(4, 4, generator=generator, dtype=torch.float64))
    expected, previous = torch.empty_like(system.c), torch.zeros_like(system.c[0])
    for s in range(length):  # u_s = c_s + (G_s ⊙ u_{s−1}) W_h, written out
        previous = system.c[s] + (system.gates[s] * previous) @ system.w_h
        expected[s] = previous
    for name in ("scan_hillis_steele", "scan_odd_even"):
        result = solve_adjoints(system, RunSpec(name))
        torch.testing.assert_close(result.x.flip(0), expected, rtol=1e-10, atol=1e-12)
        assert result.iterations == scan_steps(length, name)
    u, _, _ = linear.odd_even(system.step_matrices(), system.c)
    torch.testing.assert_close(u, expected, rtol=1e-10, atol=1e-12)


def test_hillis_steele_doubles_its_exact_prefix_each_step(digits_batch):
    params = make_params()
    system = adjoint_system(params, forward(params, digits_batch))
    final = hillis_steele(system).x.flip(0)
    seen = []
    hillis_steele(system, on_step=lambda c: seen.append(c.clone()))
    for step, c in enumerate(seen, start=1):
        reach = min(2 ** step, T)
        torch.testing.assert_close(c[:reach], final[:reach], rtol=0, atol=0)
        if reach < T:
            assert not torch.equal(c[reach], final[reach])


def test_scan_tolerance_is_bptts_own_float32_error_and_scales_with_the_problem(digits_batch):
    params = make_params(dtype=torch.float32)
    system = adjoint_system(params, forward(params, digits_batch.float()))
    tolerance = scan_tolerance(system)
    reference = bptt(system).x
    for name in ("scan_hillis_steele", "scan_odd_even"):
        x = solve_adjoints(system, RunSpec(name)).x
        assert tolerance.holds([x.numpy()], [reference.numpy()]), name
    # Derived: 8 x BPTT's own float32 error against the same recursion in float64.
    error = float((reference.double() - bptt(system.to(torch.float64)).x).abs().max())
    assert error > 0 and tolerance.atol == pytest.approx(8 * error) and tolerance.rtol == 0
    assert "float64" in tolerance.why and "T=64" in tolerance.why
    assert tolerance.atol < 1e-5 * float(reference.abs().max())
    # float64: the float32 error scaled by the units' ratio, 2^-29.
    assert scan_tolerance(system.to(torch.float64)).atol == pytest.approx(tolerance.atol * 2.0 ** -29)


def test_scan_tolerance_rejects_a_jacobi_stopped_one_step_early_and_a_one_percent_error(digits_batch):
    """Coupled strongly enough (std 1) that the adjoints do not die out within T = 64 steps,
    Jacobi needs all T steps; the one step before differs from BPTT only at the earliest time
    and by a small fraction of the adjoints' size, yet fails. So does a 1 % error; the scans,
    which differ by rounding, pass."""
    params = init_params(6, 1.0, torch.Generator().manual_seed(0))
    system = adjoint_system(params, forward(params, digits_batch.float()))
    tolerance, reference = scan_tolerance(system), bptt(system).x
    for name in ("scan_hillis_steele", "scan_odd_even"):
        assert tolerance.holds([solve_adjoints(system, RunSpec(name)).x.numpy()], [reference.numpy()])
    full = solve_adjoints(system, RunSpec("jacobi"))
    assert full.iterations == T and torch.equal(full.x, reference)
    early = solve_adjoints(system, RunSpec("jacobi", budget=T - 1)).x
    gap = float((early - reference).abs().max())
    assert 0 < gap < 1e-4 * float(reference.abs().max())
    assert not tolerance.holds([early.numpy()], [reference.numpy()])
    assert not tolerance.holds([(reference * 1.01).numpy()], [reference.numpy()])


def test_output_at_t_only_sees_earlier_inputs(digits_batch):
    """o_t predicts x_t from h_t: changing x_t, x_{t+1}, ... must leave h_0..h_t alone."""
    params = make_params()
    t = 30
    changed = digits_batch.clone()
    changed[t:] += 1.0
    before, after = forward(params, digits_batch).h, forward(params, changed).h
    torch.testing.assert_close(before[: t + 1], after[: t + 1], rtol=0, atol=0)
    assert not torch.allclose(before[t + 1], after[t + 1])


def test_forward_refuses_batch_major_input():
    with pytest.raises(ValueError, match=r"time-major \(T, B, 1\)"):
        forward(make_params(), torch.zeros(3, 64))


def test_unknown_method_is_refused(digits_batch):
    params = make_params()
    system = adjoint_system(params, forward(params, digits_batch))
    with pytest.raises(ValueError, match="unknown rnn_backprop method 'newton'"):
        solve_adjoints(system, RunSpec("newton"))


def test_checkpoint_round_trip_and_refusal(tmp_path):
    params = make_params(dtype=torch.float32)
    save_checkpoint(params, tmp_path / "weights.npz")
    loaded = load_checkpoint(tmp_path / "weights.npz")
    for a, b in zip(params.tensors(), loaded.tensors()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    arrays = params.state_dict()
    del arrays["W_h"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="lacks \\['W_h'\\]"):
        load_checkpoint(tmp_path / "broken.npz")
    arrays = params.state_dict()
    arrays["W_x"] = np.zeros((HIDDEN, 2), dtype=np.float32)
    np.savez(tmp_path / "misshaped.npz", **arrays)
    with pytest.raises(ValueError, match="W_x has shape"):
        load_checkpoint(tmp_path / "misshaped.npz")


def test_paper_size_exactness_on_full_mnist(shared_mnist_root):
    """The paper's setting, hidden 128 and T = 100 from full MNIST resized to 10×10: every exact
    method matches autograd; Jacobi_10 (the paper's fastest budget) is honestly approximate."""
    from ffsolve.data import load_dataset

    dataset = load_dataset("mnist", "folder", str(shared_mnist_root))
    rows = dataset_sequences(dataset, "train", 10)
    assert rows.shape == (60000, 100)
    x = time_major(rows[:2])
    params = init_params(128, 0.1, torch.Generator().manual_seed(0), dtype=torch.float64)
    cache = forward(params, x)
    reference, _ = autograd_gradients(params, x)
    for name in ("sequential", "jacobi", "scan_hillis_steele", "scan_odd_even"):
        assert relative_error(backward(params, cache, RunSpec(name)).grads, reference) < 1e-6, name
    truncated = backward(params, cache, RunSpec("jacobi", budget=10)).grads
    assert relative_error(truncated, reference) > 1e-6
