"""Backpropagation through time as a triangular linear system, solved three ways.

The adjoints a_t = dloss/dh_t satisfy, backwards in time,

    a_{T−1} = g_{T−1},    a_t = g_t + J_{t+1}ᵀ a_{t+1},    J_{t+1}ᵀ a = W_hᵀ (sigmoid(z_t) ⊙ a),

with g_t the direct term through o_t. Reversing time (u_s = a_{T−1−s}) makes it a forward
recursion u_s = c_s + u_{s−1} M_s (row vectors, M_s = diag(gate) W_h, u_{−1} = 0): a triangular
map along the flipped time axis, which is what ``ffsolve.solve`` takes.

- ``sequential``: ordinary BPTT, one step per time step (T − 1 dependent matvecs).
- ``jacobi``: ``ffsolve.solve(method="jacobi")`` on that map: every step at once from the
  previous iterate, one batched matmul per iteration; after k iterations the k latest adjoints
  are exact. A budget ``max_iters`` < T gives truncated (approximate) gradients, as the paper's.
- ``scan``: the recursion is affine, and affine maps compose associatively, so a parallel prefix
  scan gives every u_s *exactly*: ``hillis_steele`` in ⌈log₂ T⌉ steps (T log T matrix products),
  ``odd_even`` in about 2⌈log₂ T⌉ steps with only ~T matrix products (work-efficient).

Every method returns the adjoints in time order plus how many parallel steps it took.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

import ffsolve
from ffsolve.experiments.rnn_backprop_runs import SCAN_ALGORITHMS
from ffsolve.models.rnn_backprop import (
    ForwardCache,
    RNNParams,
    direct_adjoints,
    gradients_from_adjoints,
)


@dataclass(frozen=True)
class BackwardSpec:
    """One backward method: ``sequential``, ``jacobi`` (``max_iters`` and/or ``tol``) or ``scan``."""

    method: str
    max_iters: Optional[int] = None  # jacobi: iteration budget (None: up to T)
    # jacobi: stop once max |change| <= tol · max_t |g_t| (relative to the largest direct term;
    # 0: exact, i.e. until the iterate stops changing or T iterations)
    tol: float = 0.0
    scan_algorithm: str = "hillis_steele"

    def __post_init__(self):
        if self.method not in ("sequential", "jacobi", "scan"):
            raise ValueError(
                f"backward method must be sequential, jacobi or scan, got {self.method!r}"
            )
        if self.scan_algorithm not in SCAN_ALGORITHMS:
            raise ValueError(
                f"scan_algorithm must be one of {list(SCAN_ALGORITHMS)}, got {self.scan_algorithm!r}"
            )


@dataclass
class BackwardResult:
    grads: RNNParams
    adjoints: torch.Tensor  # (T, B, H), time order
    iterations: int  # parallel steps (sequential: T − 1 dependent steps)
    converged: bool


@dataclass(frozen=True)
class FlippedSystem:
    """u_s = c_s + (G_s ⊙ u_{s−1}) @ W_h on the reversed time axis (G_0 = 0, so u_{−1} drops out)."""

    c: torch.Tensor  # (T, B, H) direct terms, reversed in time
    gates: torch.Tensor  # (T, B, H) gate multiplying u_{s−1}; row 0 is zero
    w_h: torch.Tensor  # (H, H)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """The triangular map f: position s reads only position s − 1 of ``u``."""
        shifted = torch.zeros_like(u)
        shifted[1:] = u[:-1]
        return torch.addmm(
            self.c.reshape(-1, self.c.shape[-1]),
            (self.gates * shifted).reshape(-1, self.c.shape[-1]),
            self.w_h,
        ).reshape(u.shape)

    def step_matrices(self) -> torch.Tensor:
        """M_s = diag(G_s) W_h, ``(T, B, H, H)``, so that u_s = c_s + u_{s−1} @ M_s."""
        return self.gates.unsqueeze(-1) * self.w_h


def flipped_system(params: RNNParams, cache: ForwardCache) -> FlippedSystem:
    c = direct_adjoints(params, cache).flip(0)
    gates = torch.zeros_like(c)
    gates[1:] = cache.gate.flip(0)  # u_s = a_{T−1−s} reads a_{T−s} through gate_{T−1−s}
    return FlippedSystem(c=c, gates=gates, w_h=params.W_h)


def backward(params: RNNParams, cache: ForwardCache, spec: BackwardSpec) -> BackwardResult:
    """Adjoints by ``spec``'s method, then every parameter gradient from them."""
    if spec.method == "sequential":
        adjoints, iterations, converged = bptt_adjoints(params, cache), cache.x.shape[0] - 1, True
    elif spec.method == "jacobi":
        system = flipped_system(params, cache)
        # The adjoints scale with the loss (∝ 1/(T·B) here), so an absolute tolerance on their
        # change would mean something different at every T. Solving for adjoints / max|g| (the
        # system is linear, so this is exact up to rounding) makes ``tol`` relative instead.
        scale = float(system.c.abs().max()) if spec.tol > 0 else 0.0
        if scale > 0:
            system = FlippedSystem(c=system.c / scale, gates=system.gates, w_h=system.w_h)
        res = ffsolve.solve(system, torch.zeros_like(system.c), method="jacobi", tol=spec.tol,
                            max_iters=spec.max_iters, axis=0)
        adjoints = res.x.flip(0) * scale if scale > 0 else res.x.flip(0)
        iterations, converged = res.iterations, res.converged
    else:
        system = flipped_system(params, cache)
        scan = hillis_steele_scan if spec.scan_algorithm == "hillis_steele" else odd_even_scan
        u, iterations = scan(system.step_matrices(), system.c)
        adjoints, converged = u.flip(0), True
    return BackwardResult(gradients_from_adjoints(params, cache, adjoints), adjoints,
                          iterations, converged)


def bptt_adjoints(params: RNNParams, cache: ForwardCache) -> torch.Tensor:
    """Ordinary backpropagation through time: the reverse loop, one matvec per step."""
    g = direct_adjoints(params, cache)
    adjoints = torch.empty_like(g)
    adjoints[-1] = g[-1]
    for t in range(g.shape[0] - 2, -1, -1):
        torch.addmm(g[t], cache.gate[t] * adjoints[t + 1], params.W_h, out=adjoints[t])
    return adjoints


def hillis_steele_scan(
    matrices: torch.Tensor,
    offsets: torch.Tensor,
    on_step: Optional[Callable[[torch.Tensor], None]] = None,
) -> tuple[torch.Tensor, int]:
    """Solve u_s = offsets_s + u_{s−1} @ matrices_s (u_{−1} = 0) in ⌈log₂ T⌉ parallel steps.

    Element s holds the affine map (M, c) that takes u_{s−d} to u_s (before step 1, d = 1 and it
    is (M_s, c_s)). Step d composes it with element s − d's map, doubling the reach; once the
    reach covers the start, c_s is u_s itself because u_{−1} = 0. Composition (apply 1, then 2):
    (M₁, c₁) then (M₂, c₂) = (M₁ M₂, c₁ M₂ + c₂).

    Args:
        matrices: ``(T, B, H, H)`` step matrices (row-vector convention).
        offsets: ``(T, B, H)``.
        on_step: called with the current offsets after every step (for convergence traces).

    Returns:
        ``(u, steps)``: the solution ``(T, B, H)`` and the number of parallel steps, ⌈log₂ T⌉.
    """
    length = offsets.shape[0]
    m, c = matrices, offsets
    steps, d = 0, 1
    while d < length:
        # New values for positions >= d, all read from the previous step's arrays.
        c_new = c.clone()
        c_new[d:] = torch.matmul(c[:-d].unsqueeze(-2), m[d:]).squeeze(-2) + c[d:]
        if 2 * d < length:  # the last step never needs the composed matrices
            m_new = m.clone()
            m_new[d:] = torch.matmul(m[:-d], m[d:])
            m = m_new
        c = c_new
        steps += 1
        d *= 2
        if on_step is not None:
            on_step(c)
    return c, steps


def odd_even_scan(matrices: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The same solution with ~T matrix products instead of T log T (odd-even reduction).

    Pair up elements (2i, 2i+1) into one map each (one batched step), solve the half-length
    problem for the odd positions recursively, then fill in each even position from its odd
    predecessor (one more batched step). Depth about 2⌈log₂ T⌉ − 1, total work O(T H³): the
    better choice when compute, not depth, is the limit (a CPU).

    Returns:
        ``(u, steps)``: the solution and the number of dependent parallel steps taken.
    """
    length = offsets.shape[0]
    if length == 1:
        return offsets.clone(), 0
    half = length // 2
    even_m, odd_m = matrices[0:2 * half:2], matrices[1:2 * half:2]
    even_c, odd_c = offsets[0:2 * half:2], offsets[1:2 * half:2]
    # The pair (2i, 2i+1) as one map, taking u_{2i−1} to u_{2i+1}. (A half of length 1 never
    # reads its matrix: its u_{−1} is zero.)
    pair_m = torch.matmul(even_m, odd_m) if half > 1 else odd_m
    pair_c = torch.matmul(even_c.unsqueeze(-2), odd_m).squeeze(-2) + odd_c
    odd_u, inner_steps = odd_even_scan(pair_m, pair_c)
    u = torch.empty_like(offsets)
    u[1:2 * half:2] = odd_u
    # Even positions: u_0 = c_0; u_{2i} = c_{2i} + u_{2i−1} @ M_{2i} for i >= 1.
    u[0] = offsets[0]
    if length > 2:
        evens = slice(2, length, 2)
        u[evens] = torch.matmul(u[1:length - 1:2].unsqueeze(-2), matrices[evens]).squeeze(-2) \
            + offsets[evens]
    return u, inner_steps + (2 if length > 2 else 1)


def scan_steps(length: int, algorithm: str) -> int:
    """Parallel steps the scan takes for T = ``length`` (without running it)."""
    if length <= 1:
        return 0
    if algorithm == "hillis_steele":
        return math.ceil(math.log2(length))
    return scan_steps(length // 2, algorithm) + (2 if length > 2 else 1)
