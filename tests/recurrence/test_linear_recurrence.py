"""The library's affine-recurrence scans (ffsolve.recurrence.linear): the loop's solution in the
steps and work they state, on every length up to 40 and with batch axes."""

import math

import pytest
import torch

from ffsolve.recurrence import linear


def _system(length, batch=(3,), hidden=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    matrices = 0.6 * torch.randn(length, *batch, hidden, hidden, generator=generator,
                                 dtype=torch.float64)
    offsets = torch.randn(length, *batch, hidden, generator=generator, dtype=torch.float64)
    return matrices, offsets


def _loop(matrices, offsets):
    u = torch.empty_like(offsets)
    u[0] = offsets[0]  # u_{−1} = 0
    for s in range(1, offsets.shape[0]):  # u_s = c_s + u_{s−1} M_s, written out
        u[s] = offsets[s] + (u[s - 1].unsqueeze(-2) @ matrices[s]).squeeze(-2)
    return u


@pytest.mark.parametrize("scan", sorted(linear.SCANS))
def test_scans_solve_the_recurrence_in_the_steps_they_state(scan):
    for length in range(1, 41):
        matrices, offsets = _system(length, seed=length)
        matrices[0] = float("nan")  # u_{−1} = 0: M_0 must never be read
        u, steps, work = linear.SCANS[scan](matrices, offsets)
        torch.testing.assert_close(u, _loop(matrices, offsets), rtol=1e-10, atol=1e-12)
        assert steps == linear.scan_steps(length, scan) <= 2 * math.ceil(math.log2(max(length, 2)))
        assert 0 <= work <= length * (4 + 1) * max(1, math.ceil(math.log2(max(length, 2))))


def test_odd_even_does_about_T_matrix_products_and_hillis_steele_T_log_T():
    length, hidden = 256, 4
    matrices, offsets = _system(length, batch=(), hidden=hidden)
    _, _, work_oe = linear.odd_even(matrices, offsets)
    _, _, work_hs = linear.hillis_steele(matrices, offsets)
    assert work_oe <= 2 * length * (hidden + 1)
    assert work_hs >= (math.log2(length) - 1) * (length / 2) * hidden


def test_hillis_steele_shows_each_step_with_a_doubling_exact_prefix():
    matrices, offsets = _system(37, batch=(2,))
    exact, seen = _loop(matrices, offsets), []
    linear.hillis_steele(matrices, offsets, on_step=lambda c: seen.append(c.clone()))
    for k, offsets_k in enumerate(seen, start=1):
        reach = min(2 ** k, 37)
        torch.testing.assert_close(offsets_k[:reach], exact[:reach], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(seen[0][2:], exact[2:])  # after one step, only 2 positions are final


def test_an_unknown_scan_is_refused_by_name():
    with pytest.raises(ValueError, match="'blelloch'"):
        linear.scan_steps(8, "blelloch")
