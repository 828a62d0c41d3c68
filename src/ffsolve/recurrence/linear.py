"""Affine recurrences u_s = c_s + u_{s−1} M_s along axis 0, solved by a parallel scan (PyTorch).

Row vectors: ``offsets`` c is ``(T, *batch, H)``, ``matrices`` M is ``(T, *batch, H, H)``, and
u_{−1} = 0 (so M_0 is never read). This is the shape of every adjoint recurrence of
backpropagation through time, λ_t = g_t + J_{t+1}ᵀ λ_{t+1}, once time is reversed (then
u_s = λ_{T−1−s} and M_s = J_{T−s}): the gradients of :func:`ffsolve.solve_recurrence`
(``backward="scan"``) and the ``rnn_backprop`` experiment's scans both solve it here.

Affine maps compose associatively, (M₁, c₁) then (M₂, c₂) = (M₁ M₂, c₁ M₂ + c₂), so a prefix scan
gives every u_s in a logarithmic number of dependent steps:

* :func:`hillis_steele`: ⌈log₂ T⌉ steps, about T log₂ T matrix products (each step doubles the
  reach of every position);
* :func:`odd_even` (odd-even reduction): about 2⌈log₂ T⌉ − 1 steps, about T matrix products —
  the better choice where compute, not depth, is the limit.

Both only compose the matrices they will read again (the last level's vectors need none), and
both report their work in *row-vector products*, the unit of the loop: one ``(H,) @ (H, H)`` per
position and batch row; a matrix–matrix product counts as H of them. They reassociate the loop's
sums, so they equal it only within rounding.
"""

from __future__ import annotations

import math
from typing import Callable, Optional


def _vm(v, m):
    """Row vectors times matrices, batched: ``(..., H) @ (..., H, H) -> (..., H)``."""
    return (v.unsqueeze(-2) @ m).squeeze(-2)


def hillis_steele(matrices, offsets, on_step: Optional[Callable] = None):
    """``(u, steps, work)`` by the Hillis–Steele scan.

    Element s holds the affine map taking u_{s−d} to u_s (before step 1, d = 1 and it is
    (M_s, c_s)). Step d composes it with element s − d's map, doubling the reach; once the reach
    covers the start, the offset of element s is u_s itself (u_{−1} = 0). ``on_step(offsets)``
    sees the offsets after each step (positions below the reach are exact then).
    """
    length, hidden = offsets.shape[0], offsets.shape[-1]
    m, c = matrices, offsets
    steps, d, work = 0, 1, 0
    while d < length:
        c_new = c.clone()
        c_new[d:] = _vm(c[:-d], m[d:]) + c[d:]
        work += length - d
        if 2 * d < length:  # the last step never reads the composed matrices
            m_new = m.clone()
            m_new[d:] = m[:-d] @ m[d:]
            work += (length - d) * hidden
            m = m_new
        c = c_new
        steps += 1
        d *= 2
        if on_step is not None:
            on_step(c)
    return c, steps, work


def odd_even(matrices, offsets):
    """``(u, steps, work)`` by odd-even reduction: pair up (2i, 2i+1), solve the half-length
    problem for the odd positions recursively, then fill each even position from its odd
    predecessor."""
    import torch

    length, hidden = offsets.shape[0], offsets.shape[-1]
    if length == 1:
        return offsets.clone(), 0, 0
    half = length // 2
    even_m, odd_m = matrices[0:2 * half:2], matrices[1:2 * half:2]
    even_c, odd_c = offsets[0:2 * half:2], offsets[1:2 * half:2]
    # The pair (2i, 2i+1) as one map taking u_{2i−1} to u_{2i+1}; a half of length 1 never reads
    # its matrix (its u_{−1} is zero).
    pair_m = even_m @ odd_m if half > 1 else odd_m
    pair_c = _vm(even_c, odd_m) + odd_c
    work = half + (half * hidden if half > 1 else 0)
    odd_u, inner_steps, inner_work = odd_even(pair_m, pair_c)
    u = torch.empty_like(offsets)
    u[1:2 * half:2] = odd_u
    u[0] = offsets[0]
    if length > 2:  # u_{2i} = c_{2i} + u_{2i−1} M_{2i} for i >= 1
        evens = slice(2, length, 2)
        u[evens] = _vm(u[1:length - 1:2], matrices[evens]) + offsets[evens]
        work += len(range(2, length, 2))
    return u, inner_steps + (2 if length > 2 else 1), work + inner_work


SCANS = {"hillis_steele": hillis_steele, "odd_even": odd_even}


def scan_steps(length: int, scan: str) -> int:
    """Dependent steps the scan ``scan`` (a key of :data:`SCANS`) takes for T = ``length``."""
    if scan not in SCANS:
        raise ValueError(f"unknown scan {scan!r}; expected one of {sorted(SCANS)}")
    if length <= 1:
        return 0
    if scan == "hillis_steele":
        return math.ceil(math.log2(length))
    return scan_steps(length // 2, scan) + (2 if length > 2 else 1)

