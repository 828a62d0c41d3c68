"""Parallel prefix scans over the time axis, and the affine and Kalman-filter combines.

``associative_scan(combine, elems)`` returns every prefix combination
``elems[0] ⊕ elems[1] ⊕ … ⊕ elems[t]`` along axis 0, where ``combine(earlier, later)`` takes two
tuples of arrays (the same structure as ``elems``, the same leading length) and is associative.
JAX has it (``jax.lax.associative_scan``); PyTorch has no supported one, so :func:`torch_scan`
writes it: pair up neighbours (one combine over T/2 pairs), solve the half-length problem
recursively, then fill in the even positions (one more combine) — ⌈log₂T⌉ levels down and as many
back up, about 2T combines in all (work-efficient, unlike the T·log T of Hillis–Steele).

The combines (each applies ``earlier`` first):

* affine, full matrices: (A_i, b_i) ⊕ (A_j, b_j) = (A_j A_i, A_j b_i + b_j);
* affine, diagonal: the same with elementwise products;
* Kalman filter (Särkkä & García-Fernández 2021, parallel filtering elements (A, b, C, η, J)):
  with M = I + C_i J_j,
  A = A_j M⁻¹ A_i,  b = A_j M⁻¹ (b_i + C_i η_j) + b_j,  C = A_j M⁻¹ C_i A_jᵀ + C_j,
  η = A_iᵀ M⁻ᵀ (η_j − J_j b_i) + η_i,  J = A_iᵀ M⁻ᵀ J_j A_i + J_i
  (C and J stay symmetric, so (I + J_j C_i)⁻¹ = M⁻ᵀ).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def torch_scan(combine: Callable, elems: Sequence):
    """Inclusive prefix scan of ``combine`` along axis 0 of every tensor in ``elems`` (PyTorch;
    NumPy arrays work too)."""
    elems = tuple(elems)
    length = elems[0].shape[0]
    if length < 2:
        return elems
    pairs = combine(tuple(e[0:-1:2] for e in elems), tuple(e[1::2] for e in elems))
    odd = torch_scan(combine, pairs)  # prefixes ending at positions 1, 3, 5, ...
    outs = tuple(_empty_like(e) for e in elems)
    for out, e, o in zip(outs, elems, odd):
        out[0] = e[0]
        out[1::2] = o
    if length > 2:
        before = tuple(o[: (length - 1) // 2] for o in odd)  # prefixes ending at 1, 3, ..., to pair
        evens = combine(before, tuple(e[2::2] for e in elems))
        for out, ev in zip(outs, evens):
            out[2::2] = ev
    return outs


def _empty_like(a):
    if isinstance(a, np.ndarray):
        return np.empty_like(a)
    import torch

    return torch.empty_like(a)


def _mv(m, v):
    return (m @ v[..., None])[..., 0]


def affine_full(earlier, later):
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j @ a_i, _mv(a_j, b_i) + b_j


def affine_diagonal(earlier, later):
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, a_j * b_i + b_j


def kalman_combine(inv: Callable, eye: Callable):
    """The filtering combine, given ``inv(M) = M⁻¹`` and ``eye(like) -> I`` broadcastable.

    One explicit inverse per combine rather than two solves: M = I + C_i J_j with C_i, J_j
    symmetric positive semi-definite has eigenvalues >= 1 in real part (C J is similar to a
    PSD matrix), so it is well conditioned, and one LU instead of two halves the XLA program.
    """

    def combine(earlier, later):
        a_i, b_i, c_i, eta_i, j_i = earlier
        a_j, b_j, c_j, eta_j, j_j = later
        m = eye(c_i) + c_i @ j_j
        m_inv = inv(m)
        aj_minv = a_j @ m_inv
        ai_t_minv_t = a_i.mT @ m_inv.mT
        a = aj_minv @ a_i
        b = _mv(aj_minv, b_i + _mv(c_i, eta_j)) + b_j
        c = aj_minv @ c_i @ a_j.mT + c_j
        eta = _mv(ai_t_minv_t, eta_j - _mv(j_j, b_i)) + eta_i
        j = ai_t_minv_t @ j_j @ a_i + j_i
        return a, b, c, eta, j

    return combine
