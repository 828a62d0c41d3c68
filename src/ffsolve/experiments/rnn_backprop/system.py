"""Backpropagation through time as a triangular linear system, and every way this package solves it.

The adjoints a_t = dloss/dh_t satisfy, backwards in time,

    a_{T−1} = g_{T−1},    a_t = g_t + J_{t+1}ᵀ a_{t+1},    J_{t+1}ᵀ a = W_hᵀ (sigmoid(z_t) ⊙ a),

with g_t the direct term through o_t. Reversing time (u_s = a_{T−1−s}) makes it a forward
recursion u_s = c_s + (G_s ⊙ u_{s−1}) W_h (row vectors, G_0 = 0 so u_{−1} drops out): a triangular
map along the reversed time axis, :class:`AdjointSystem`, which is what ``ffsolve.solve`` takes.

Every method returns an :class:`ffsolve.SolveResult` whose ``x`` is the adjoint sequence
a_t = dloss/dh_t, ``(T, B, H)``, in time order (the output the harness checks), and

* ``iterations``: dependent parallel steps (never more than T);
* ``network_evaluations``: work in *full passes of the adjoint map*. One pass is T·B products of a
  length-H row vector with an H×H matrix (T·B·H² multiply-adds); an H×H by H×H matrix product
  counts as H of them. Building the step matrices of the scans (elementwise) is not counted.

The methods (run names of :mod:`ffsolve.kit.runs`):

* ``sequential``: ordinary BPTT by hand, T − 1 dependent steps. Step s computes position s with
  exactly the operation the map uses for it (one element of a batched product, the same shapes),
  so every ``ffsolve.solve`` method at tol 0 equals it bit for bit.
* ``jacobi``, ``gs_jacobi``, ``jacobi_gs``: ``ffsolve.solve`` on the map from zero adjoints;
  ``jacobi_k<k>`` stops after k iterations (truncated, approximate gradients, the paper's budgets).
* ``jacobi_tol``: Jacobi until max |change| <= tol · max_t |g_t| (a tolerance relative to the
  largest direct term, so it means the same at every T and batch size).
* ``scan_hillis_steele``, ``scan_odd_even``: the recursion is affine and affine maps compose
  associatively, so a parallel prefix scan gives every u_s in ⌈log₂ T⌉ (Hillis–Steele, T log T
  matrix products) or about 2⌈log₂ T⌉ (odd-even reduction, about T matrix products) steps. They
  reassociate the sums, so they equal BPTT only to within :func:`scan_tolerance`.
  Both are the library's (:mod:`ffsolve.recurrence.linear`, which also solves
  :func:`ffsolve.solve_recurrence`'s adjoints for ``backward="scan"``); this module only builds
  the system they take.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch

import ffsolve
from ffsolve.experiments.rnn_backprop.layout import BLOCKED
from ffsolve.experiments.rnn_backprop.model import (
    ForwardCache,
    RNNParams,
    direct_adjoints,
    forward,
    gradients_from_adjoints,
)
from ffsolve.kit import Candidate, RunSpec, Tolerance
from ffsolve.recurrence import linear
from ffsolve import SolveResult

SCANS = ("scan_hillis_steele", "scan_odd_even")
LIBRARY_METHODS = ("jacobi", "gs_jacobi", "jacobi_gs", "suffix_jacobi", "sliding_jacobi")
METHODS = ("sequential", "jacobi_tol") + LIBRARY_METHODS + SCANS


@dataclass(frozen=True)
class AdjointSystem:
    """u_s = c_s + (G_s ⊙ u_{s−1}) @ W_h on the reversed time axis (G_0 = 0)."""

    c: torch.Tensor  # (T, B, H) direct terms, reversed in time
    gates: torch.Tensor  # (T, B, H) gate multiplying u_{s−1}; row 0 is zero
    w_h: torch.Tensor  # (H, H)

    @property
    def length(self) -> int:
        return self.c.shape[0]

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """The triangular map f: position s reads only position s − 1 of ``u``.

        One batched product over positions: position s is computed by the same (B, H) @ (H, H)
        product :meth:`step` computes, which is what makes BPTT and the solvers agree bitwise.
        """
        shifted = torch.zeros_like(u)
        shifted[1:] = u[:-1]
        return torch.baddbmm(self.c, self.gates * shifted, self.w_h.expand(self.length, -1, -1))

    def window(self, u: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Positions [start, stop) of the map alone (``suffix_jacobi``, ``sliding_jacobi``): the
        same per-position products of the batched call (one bmm batch entry each), so the same
        bits."""
        previous = u[start - 1:stop - 1] if start > 0 else torch.cat([torch.zeros_like(u[:1]), u[:stop - 1]])
        return torch.baddbmm(self.c[start:stop], self.gates[start:stop] * previous,
                             self.w_h.expand(stop - start, -1, -1))

    def step(self, s: int, previous: torch.Tensor) -> torch.Tensor:
        """Position s from u_{s−1} ``(B, H)``: the map's operation for that one position."""
        return torch.baddbmm(self.c[s:s + 1], self.gates[s:s + 1] * previous,
                             self.w_h.expand(1, -1, -1))[0]

    def step_matrices(self) -> torch.Tensor:
        """M_s = diag(G_s) W_h, ``(T, B, H, H)``, so that u_s = c_s + u_{s−1} @ M_s."""
        return self.gates.unsqueeze(-1) * self.w_h

    def to(self, dtype: torch.dtype) -> "AdjointSystem":
        return AdjointSystem(self.c.to(dtype), self.gates.to(dtype), self.w_h.to(dtype))


def adjoint_system(params: RNNParams, cache: ForwardCache) -> AdjointSystem:
    c = direct_adjoints(params, cache).flip(0).contiguous()
    gates = torch.zeros_like(c)
    gates[1:] = cache.gate.flip(0)  # u_s = a_{T−1−s} reads a_{T−s} through gate_{T−1−s}
    return AdjointSystem(c=c, gates=gates, w_h=params.W_h)


def _result(u: torch.Tensor, method: str, iterations: int, work: float, *, converged: bool = True,
            tol: float = 0.0) -> SolveResult:
    """A SolveResult with the adjoints in time order; ``work`` in row-vector products per item."""
    length = u.shape[0]
    return SolveResult(x=u.flip(0), iterations=iterations, converged=converged, method=method,
                       block_size=None, tol=tol, sequence_length=length,
                       network_evaluations=work / length)


# ------------------------------------------------------------------------------ the methods


def bptt(system: AdjointSystem, on_step: Optional[Callable[[torch.Tensor], None]] = None) -> SolveResult:
    """Ordinary backpropagation through time: T − 1 dependent steps, one position each."""
    u = torch.empty_like(system.c)
    u[0] = system.c[0]
    for s in range(1, system.length):
        u[s] = system.step(s, u[s - 1])
        if on_step is not None:
            on_step(u, s)
    return _result(u, "sequential", system.length - 1, system.length - 1)


def library_solve(system: AdjointSystem, spec: RunSpec, *, relative_tol: float = 0.0,
                  trace: bool = False) -> SolveResult:
    """``ffsolve.solve`` on the map from zero adjoints (``jacobi_tol``: Jacobi to a relative tol)."""
    method = "jacobi" if spec.method == "jacobi_tol" else spec.method
    # An absolute threshold tol · max|g|: the same stopping rule as solving for adjoints / max|g|,
    # without changing the arithmetic (so a run that goes to the end is still bitwise exact).
    tol = relative_tol * float(system.c.abs().max()) if spec.method == "jacobi_tol" else 0.0
    res = ffsolve.solve(system, torch.zeros_like(system.c), method=method,
                        block_size=spec.block_size, tol=tol, max_iters=spec.budget, trace=trace)
    return dataclasses.replace(res, x=res.x.flip(0), method=spec.method)


def hillis_steele(system: AdjointSystem, on_step: Optional[Callable[[torch.Tensor], None]] = None
                  ) -> SolveResult:
    """The adjoints in ⌈log₂ T⌉ parallel steps by the library's Hillis–Steele scan
    (:func:`ffsolve.recurrence.linear.hillis_steele`); ``on_step`` sees the offsets after each
    step."""
    u, steps, work = linear.hillis_steele(system.step_matrices(), system.c, on_step)
    return _result(u, "scan_hillis_steele", steps, work)


def odd_even(system: AdjointSystem) -> SolveResult:
    """The same solution with about T matrix products instead of T log T, by the library's
    odd-even reduction (:func:`ffsolve.recurrence.linear.odd_even`): depth about 2⌈log₂ T⌉ − 1."""
    u, steps, work = linear.odd_even(system.step_matrices(), system.c)
    return _result(u, "scan_odd_even", steps, work)


def scan_steps(length: int, method: str) -> int:
    """Parallel steps the scan run ``method`` takes for T = ``length`` (without running it)."""
    return linear.scan_steps(length, method.removeprefix("scan_"))


def solve_adjoints(system: AdjointSystem, spec: RunSpec, *, relative_tol: float = 0.0) -> SolveResult:
    """The adjoints by the run ``spec`` (see the module docstring for the names)."""
    if spec.method == "sequential" and spec.budget is None:
        return bptt(system)
    if spec.method in LIBRARY_METHODS + ("sequential",) or spec.method == "jacobi_tol":
        return library_solve(system, spec, relative_tol=relative_tol)
    if spec.method == "scan_hillis_steele":
        return hillis_steele(system)
    if spec.method == "scan_odd_even":
        return odd_even(system)
    raise ValueError(f"unknown rnn_backprop method {spec.method!r}; expected one of {list(METHODS)}")


def traced_adjoints(system: AdjointSystem, spec: RunSpec, *, relative_tol: float = 0.0):
    """The same solve, recording per parallel step the L2 distance of the iterate to the final
    adjoints (``error``, index 0 = the start: zero adjoints; BPTT's has a_{T−1} = g_{T−1} in place)
    and of consecutive iterates (``change``).
    ``scan_odd_even`` works on half-length sub-problems, so it has no full iterates to record."""
    if spec.method in LIBRARY_METHODS + ("jacobi_tol",) or spec.budget is not None:
        res = library_solve(system, spec, relative_tol=relative_tol, trace=True)
        return res, {"error": res.trace.error, "change": res.trace.change}
    iterates = [torch.zeros_like(system.c)]
    if spec.method == "sequential":  # starts with a_{T−1} = g_{T−1} in place (no product needed)
        iterates = [torch.cat([system.c[:1], torch.zeros_like(system.c[1:])])]
        res = bptt(system, on_step=lambda u, s: iterates.append(
            torch.cat([u[:s + 1], torch.zeros_like(u[s + 1:])])))
    elif spec.method == "scan_hillis_steele":
        res = hillis_steele(system, on_step=lambda c: iterates.append(c.clone()))
    else:
        return solve_adjoints(system, spec), {}
    final = res.x.flip(0).double()
    stacked = torch.stack([it.double() for it in iterates])
    error = (stacked - final).flatten(1).norm(dim=1)
    change = (stacked[1:] - stacked[:-1]).flatten(1).norm(dim=1)
    return res, {"error": error.cpu().numpy(), "change": change.cpu().numpy()}


# ------------------------------------------------------------------------------- tolerance


SCAN_FACTOR = 8.0  # the scan's own float32 error assumed at most 7 times BPTT's (3.4 the most seen)


def float32_error(reference, exact) -> float:
    """max |reference − exact| in float64: a float32 path's own error against float64."""
    return float((reference.to(torch.float64) - exact).abs().max()) if exact.numel() else 0.0


def scan_tolerance(system: AdjointSystem, factor: float = SCAN_FACTOR) -> Tolerance:
    """The closeness a scan must keep to BPTT: BPTT's own float32 error, measured, times ``factor``.

    BPTT in float32 and the same recursion in float64 (:meth:`AdjointSystem.to`) give BPTT's own
    rounding error e = max |a_BPTT − a_exact|. A scan reassociates the same sums, so its own error
    against the exact adjoints is of the same size (measured on random systems, T = 9 to 500,
    H = 6 to 128: at most 3.4 e); assuming it at most (factor − 1) e,

        |a_scan − a_BPTT| <= |a_scan − a_exact| + |a_BPTT − a_exact| <= factor · e.

    e is floored at one rounding of the largest adjoint (u · max|a|) so that a system whose BPTT
    happens to round exactly still admits the scans' own rounding. For a float64 system, the
    float32 error of the system rounded to float32 is scaled by the units' ratio (2^-29): rounding
    errors scale with the unit roundoff. Two float32 BPTT passes and one float64 pass: cheap.
    """
    length, hidden = system.length, system.w_h.shape[0]
    dtype = system.c.dtype
    unit = torch.finfo(dtype).eps / 2
    unit32 = torch.finfo(torch.float32).eps / 2
    exact = bptt(system.to(torch.float64)).x
    error = float32_error(bptt(system.to(torch.float32)).x, exact)
    floor = unit32 * float(exact.abs().max()) if exact.numel() else 0.0
    measured = max(error, floor) * (unit / unit32)
    atol = factor * measured
    why = (
        "a scan composes the affine steps in another order than BPTT (reassociated sums), so float "
        "rounding differs. Derived from BPTT's own float32 error against a float64 evaluation of "
        f"the same recursion: e = max|a_BPTT32 - a_BPTT64| = {error:.3g} (floored at u32·max|a| = "
        f"{floor:.3g}), times {factor:g}: the scan's own error assumed at most {factor - 1:g} e "
        "(at most 3.4 e on random systems, T 9-500, H 6-128), plus BPTT's e, by the triangle "
        f"inequality. T={length}, H={hidden}, batch {system.c.shape[1]}, {dtype}"
        + ("" if dtype == torch.float32 else f", e scaled by u/u32 = {unit / unit32:.3g}")
    )
    return Tolerance(atol=atol, rtol=0.0, why=why)


# --------------------------------------------------------------------------- the backward pass


@dataclass
class BackwardResult:
    grads: RNNParams
    solve: SolveResult  # x: the adjoints (T, B, H), time order

    @property
    def adjoints(self) -> torch.Tensor:
        return self.solve.x


def backward(params: RNNParams, cache: ForwardCache, spec: RunSpec, *,
             relative_tol: float = 0.0) -> BackwardResult:
    """Adjoints by the run ``spec``, then every parameter gradient from them (a training step)."""
    solve = solve_adjoints(adjoint_system(params, cache), spec, relative_tol=relative_tol)
    return BackwardResult(gradients_from_adjoints(params, cache, solve.x), solve)


# ------------------------------------------------------------------------------- contract


def candidates(params: RNNParams, x, runs: Sequence[RunSpec], *, jacobi_tol: float = 0.0,
               errors: Mapping[str, float] | None = None, extra: Mapping | None = None) -> list[Candidate]:
    """One harness candidate per run for the quantity ``solve``: one backward pass (the adjoint
    solve) on ``params`` and the batch ``x``, its adjoints checked against BPTT's (bitwise, or
    within :func:`scan_tolerance` for the scans). ``errors``: each run's gradient distance from
    autograd's (``gradient_rel_error_vs_autograd``); ``extra``: fields every record shares."""
    cache = forward(params, x)
    system = adjoint_system(params, cache)
    specs = list(runs)
    tolerance = scan_tolerance(system) if any(s.method in SCANS for s in specs) else None
    out = []
    for spec in specs:
        rel = jacobi_tol if spec.method == "jacobi_tol" else 0.0
        fields = {
            "quantity": "solve",
            **dict(extra or {}),
            "output": "adjoints dloss/dh_t, (T, batch, hidden), time order",
        }
        if errors is not None:
            fields["gradient_rel_error_vs_autograd"] = errors[spec.name]
        if spec.method == "jacobi_tol":
            fields["relative_tol"] = jacobi_tol
        out.append(Candidate(
            spec,
            lambda spec=spec, rel=rel: solve_adjoints(system, spec, relative_tol=rel),
            traced=lambda spec=spec, rel=rel: traced_adjoints(system, spec, relative_tol=rel),
            tolerance=tolerance if spec.method in SCANS else None,
            extra=fields,
        ))
    return out


def contract_candidates():
    """A tiny instance for tests/experiments/test_contract.py: a random RNN (hidden 6, T = 23, batch 2) on
    random inputs, float32. ``sequential`` is hand-written BPTT; every ``ffsolve.solve`` method
    (the blocked ones at block 5, which does not divide T) must equal it bit for bit; the scans
    are held to :func:`scan_tolerance`. Each with a traced twin."""
    from ffsolve.experiments.rnn_backprop.model import init_params

    generator = torch.Generator().manual_seed(7)
    params = init_params(6, 0.5, generator)
    x = torch.rand(23, 2, 1, generator=generator)
    system = adjoint_system(params, forward(params, x))
    length = system.length
    # The library's own sequential solve (T calls of the whole map) runs under a budget of T so
    # that its run name, sequential_k23, differs from the reference's, hand-written BPTT's.
    specs = [RunSpec("sequential")] + [
        RunSpec(m, 5 if m in BLOCKED else None, length if m == "sequential" else None)
        for m in ffsolve.available_methods()
    ] + [RunSpec(m) for m in SCANS]
    tolerance = scan_tolerance(system)
    out = []
    for spec in specs:
        out.append(Candidate(
            spec,
            lambda spec=spec: solve_adjoints(system, spec),
            traced=lambda spec=spec: traced_adjoints(system, spec),
            tolerance=tolerance if spec.method in SCANS else None,
        ))
    return out
