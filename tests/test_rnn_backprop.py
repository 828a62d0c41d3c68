"""The RNN backprop model and its backward methods: every one against PyTorch autograd.

Data: scikit-learn's 8×8 digits read as sequences of T = 64 pixels (tiny hidden size), in float64
so that a 1e-6 relative error judges the method, not the rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments.rnn_backprop import dataset_sequences, relative_error, time_major
from ffsolve.experiments.rnn_backprop_backward import (
    BackwardSpec,
    backward,
    bptt_adjoints,
    hillis_steele_scan,
    odd_even_scan,
    scan_steps,
)
from ffsolve.models.rnn_backprop import (
    autograd_gradients,
    forward,
    init_params,
    load_params,
    save_params,
)

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


EXACT_SPECS = {
    "sequential": BackwardSpec("sequential"),
    "jacobi_T": BackwardSpec("jacobi", max_iters=T),
    "jacobi_default_budget": BackwardSpec("jacobi"),
    "scan_hillis_steele": BackwardSpec("scan", scan_algorithm="hillis_steele"),
    "scan_odd_even": BackwardSpec("scan", scan_algorithm="odd_even"),
}


@pytest.mark.parametrize("name", list(EXACT_SPECS))
def test_exact_methods_match_autograd(digits_batch, name):
    params = make_params()
    result = backward(params, forward(params, digits_batch), EXACT_SPECS[name])
    reference, loss = autograd_gradients(params, digits_batch)
    assert float(forward(params, digits_batch).loss) == pytest.approx(float(loss), rel=1e-12)
    assert relative_error(result.grads, reference) < 1e-6
    # Per parameter too: a small tensor (b_o) could hide inside the overall norm.
    for got, want in zip(result.grads.tensors(), reference.tensors()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-10)
    assert result.converged
    assert result.iterations <= T


def test_truncated_jacobi_has_exactly_the_last_k_adjoints_right(digits_batch):
    """After k Jacobi iterations the k latest adjoints (the first k of the reversed recursion) are
    exact, and the one before them is not yet."""
    params = make_params()
    cache = forward(params, digits_batch)
    exact = bptt_adjoints(params, cache)
    for k in (1, 5, 20):
        result = backward(params, cache, BackwardSpec("jacobi", max_iters=k))
        assert result.iterations == k and not result.converged
        torch.testing.assert_close(result.adjoints[T - k:], exact[T - k:], rtol=1e-12, atol=1e-14)
        # Not yet exact: off by far more than rounding (the gap shrinks with k, as Jacobi converges).
        assert float((result.adjoints[T - k - 1] - exact[T - k - 1]).abs().max()) > 1e-11
    reference, _ = autograd_gradients(params, digits_batch)
    truncated = backward(params, cache, BackwardSpec("jacobi", max_iters=5)).grads
    assert relative_error(truncated, reference) > 1e-6  # approximate, honestly so


def test_iterations_never_exceed_the_sequence_length(digits_batch):
    params = make_params()
    cache = forward(params, digits_batch)
    result = backward(params, cache, BackwardSpec("jacobi", max_iters=10 * T))
    assert result.iterations <= T and result.converged
    hs = backward(params, cache, BackwardSpec("scan", scan_algorithm="hillis_steele"))
    oe = backward(params, cache, BackwardSpec("scan", scan_algorithm="odd_even"))
    assert hs.iterations == math.ceil(math.log2(T)) == 6
    assert oe.iterations == scan_steps(T, "odd_even") <= 2 * math.ceil(math.log2(T))


def test_jacobi_tolerance_stops_early_close_to_exact(digits_batch):
    params = make_params(std=0.1)
    cache = forward(params, digits_batch)
    result = backward(params, cache, BackwardSpec("jacobi", tol=1e-10))
    assert result.converged and result.iterations < T
    reference, _ = autograd_gradients(params, digits_batch)
    assert relative_error(result.grads, reference) < 1e-6


def test_jacobi_tolerance_is_relative_to_the_adjoint_scale(digits_batch):
    """The same sequence repeated 8 times has adjoints 8× smaller per item (the loss is a batch
    mean); a relative tolerance must stop after the same number of iterations."""
    params = make_params(std=0.1)
    one, many = digits_batch[:, :1], digits_batch[:, :1].repeat(1, 8, 1)
    spec = BackwardSpec("jacobi", tol=1e-6)
    small = backward(params, forward(params, one), spec)
    large = backward(params, forward(params, many), spec)
    assert 1 < small.iterations < T
    assert large.iterations == small.iterations


@pytest.mark.parametrize("length", [1, 2, 3, 5, 7, 16, 33])
def test_scans_solve_the_affine_recursion_for_any_length(length):
    generator = torch.Generator().manual_seed(length)
    matrices = torch.randn(length, 2, 4, 4, generator=generator, dtype=torch.float64) * 0.5
    offsets = torch.randn(length, 2, 4, generator=generator, dtype=torch.float64)
    expected, previous = torch.empty_like(offsets), torch.zeros_like(offsets[0])
    for s in range(length):  # u_s = c_s + u_{s−1} M_s, u_{−1} = 0, written out
        previous = offsets[s] + torch.einsum("bi,bij->bj", previous, matrices[s])
        expected[s] = previous
    for scan, algorithm in ((hillis_steele_scan, "hillis_steele"), (odd_even_scan, "odd_even")):
        u, steps = scan(matrices, offsets)
        torch.testing.assert_close(u, expected, rtol=1e-10, atol=1e-12)
        assert steps == scan_steps(length, algorithm)


def test_hillis_steele_doubles_its_exact_prefix_each_step():
    generator = torch.Generator().manual_seed(0)
    matrices = torch.randn(20, 1, 3, 3, generator=generator, dtype=torch.float64)
    offsets = torch.randn(20, 1, 3, generator=generator, dtype=torch.float64)
    final, _ = hillis_steele_scan(matrices, offsets)
    seen = []
    hillis_steele_scan(matrices, offsets, on_step=lambda c: seen.append(c.clone()))
    for step, c in enumerate(seen, start=1):
        reach = min(2 ** step, 20)
        torch.testing.assert_close(c[:reach], final[:reach])
        if reach < 20:
            assert not torch.allclose(c[reach], final[reach])


def test_float32_methods_agree_with_sequential_bptt(digits_batch):
    params = make_params(dtype=torch.float32)
    x = digits_batch.float()
    cache = forward(params, x)
    sequential = backward(params, cache, BackwardSpec("sequential")).grads.flat()
    for spec in (BackwardSpec("jacobi"), BackwardSpec("scan"), BackwardSpec("scan", scan_algorithm="odd_even")):
        other = backward(params, cache, spec).grads.flat()
        assert float((other - sequential).abs().max()) <= 1e-5 * float(sequential.abs().max())


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


def test_unknown_backward_settings_are_refused():
    with pytest.raises(ValueError, match="sequential, jacobi or scan"):
        BackwardSpec("newton")
    with pytest.raises(ValueError, match="scan_algorithm"):
        BackwardSpec("scan", scan_algorithm="blelloch")


def test_checkpoint_round_trip_and_refusal(tmp_path):
    params = make_params(dtype=torch.float32)
    save_params(params, tmp_path / "weights.npz")
    loaded = load_params(tmp_path / "weights.npz")
    for a, b in zip(params.tensors(), loaded.tensors()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    arrays = params.state_dict()
    del arrays["W_h"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="lacks \\['W_h'\\]"):
        load_params(tmp_path / "broken.npz")
    arrays = params.state_dict()
    arrays["W_x"] = np.zeros((HIDDEN, 2), dtype=np.float32)
    np.savez(tmp_path / "misshaped.npz", **arrays)
    with pytest.raises(ValueError, match="W_x has shape"):
        load_params(tmp_path / "misshaped.npz")


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
    for spec in (BackwardSpec("sequential"), BackwardSpec("jacobi"), BackwardSpec("scan"),
                 BackwardSpec("scan", scan_algorithm="odd_even")):
        assert relative_error(backward(params, cache, spec).grads, reference) < 1e-6, spec
    truncated = backward(params, cache, BackwardSpec("jacobi", max_iters=10)).grads
    assert relative_error(truncated, reference) > 1e-6
