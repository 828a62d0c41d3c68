"""Sampling from MADE as a triangular fixed-point problem (paper §1.3), and the runs that solve it.

All randomness is drawn up front: logistic noise ε = log U − log(1 − U), U ~ U(1e-5, 1 − 1e-5).
Then x_d = clamp(μ_d(x_<d) + exp(log s_d(x_<d)) · ε_d, logit(λ), logit(1 − λ)) is a deterministic
function of earlier dimensions: the map f below is triangular along axis 1, its fixed point is the
sample, and every method returns the same sample for the same noise. Each call of f is one full
MADE forward pass, whatever the method, so every run is bitwise equal to the sequential one (the
masked weights are exact zeros) and its network evaluations equal its iterations.

:func:`candidates` turns the configured runs into harness candidates: the timed program is the
plain solve, its traced twin the same solve with a :class:`StreamingTrace` recorder, which computes
the per-iteration norms while the solve runs rather than with ``solve(trace=True)``, which keeps
every iterate on the host: 3,073 iterates of a 100 × 3,072 CIFAR-10 batch are 3.8 GB, the
original's memory problem.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

import ffsolve
from ffsolve.experiments.made.density import logit_bounds
from ffsolve.experiments.made.model import MADE
from ffsolve.kit import Candidate, RunSpec, expand_runs

# The methods that take a block size; each runs once per configured block size.
BLOCKED = ("gs_jacobi", "jacobi_gs")

NOISE_LOW = 1e-5  # U is drawn from (1e-5, 1 − 1e-5), as in the original, so ε stays finite


def logistic_noise(batch: int, dims: int, seed: int, device="cpu") -> torch.Tensor:
    """``(batch, dims)`` float32 logistic noise, drawn on the CPU from ``seed`` then moved.

    Drawing on the CPU makes the noise (and so the samples) the same on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, dims, generator=generator, dtype=torch.float64)
    u = NOISE_LOW + (1.0 - 2.0 * NOISE_LOW) * u
    return (torch.log(u) - torch.log1p(-u)).float().to(device)


def sampling_map(model: MADE, noise: torch.Tensor, lam: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x) = clamp(μ(x) + exp(log s(x)) · ε): triangular along axis 1 (one full forward per call)."""
    low, high = logit_bounds(lam)

    @torch.no_grad()
    def f(x: torch.Tensor) -> torch.Tensor:
        mean, log_scale = model(x)
        return (mean + torch.exp(log_scale) * noise).clamp(low, high)

    return f


def solve_samples(model: MADE, noise: torch.Tensor, lam: float, method: str,
                  block_size: Optional[int] = None, tol: float = 0.0,
                  recorder: Optional["StreamingTrace"] = None) -> ffsolve.SolveResult:
    """Sample a batch (one row of ``noise`` per sample) with ``method``, starting from zeros."""
    f = sampling_map(model, noise, lam)
    if recorder is not None:
        f = recorder.wrap(f)
    x0 = torch.zeros_like(noise)
    result = ffsolve.solve(f, x0, method=method, block_size=block_size, tol=tol, axis=1)
    if recorder is not None:
        recorder.finish(result.x)
    return result


class StreamingTrace:
    """Per-iteration norms of a solve, computed while it runs; keeps only a few iterates.

    Every method calls f with its current iterate, so the input of call k is iterate k − 1; the
    last iterate is the result. Per batch item it records the L2 change between consecutive
    iterates and the L2 error to ``final`` (the sample the same method returned in an untraced run
    on the same noise), and a copy of the first ``keep`` samples at the iterations in ``snapshots``.
    """

    def __init__(self, final: torch.Tensor, snapshots: Sequence[int], keep: int):
        self.final = final
        self.snapshots = set(int(s) for s in snapshots)
        self.keep = keep
        self.errors: list[np.ndarray] = []
        self.changes: list[np.ndarray] = []
        self.kept: dict[int, np.ndarray] = {}
        self._previous: Optional[torch.Tensor] = None

    def _note(self, x: torch.Tensor) -> None:
        k = len(self.errors)
        self.errors.append(_rows_l2(x - self.final))
        if self._previous is not None:
            self.changes.append(_rows_l2(x - self._previous))
        if k in self.snapshots:
            self.kept[k] = x[: self.keep].detach().cpu().numpy().copy()
        # A copy: the solvers write into their iterate in place.
        self._previous = x.detach().clone()

    def wrap(self, f: Callable) -> Callable:
        def traced(x):
            self._note(x)
            return f(x)

        return traced

    def finish(self, x: torch.Tensor) -> None:
        self._note(x)
        last = len(self.errors) - 1
        self.kept[last] = x[: self.keep].detach().cpu().numpy().copy()

    def arrays(self) -> dict[str, np.ndarray]:
        """``error`` (K + 1, batch), ``change`` (K, batch), ``snapshot_iterations``, ``snapshots``."""
        steps = sorted(self.kept)
        width = self.final.shape[0]
        return {
            "error": np.stack(self.errors),
            "change": np.stack(self.changes) if self.changes else np.zeros((0, width)),
            "snapshot_iterations": np.asarray(steps, dtype=np.int64),
            "snapshots": np.stack([self.kept[k] for k in steps]),
        }


def _rows_l2(a: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(a.double(), dim=1).cpu().numpy()


def run_specs(methods: Iterable[str], block_sizes: Iterable[int]) -> list[RunSpec]:
    """The configured runs: ``sequential``, ``jacobi``, ``gs_jacobi_b28``, ..."""
    return expand_runs(methods, block_sizes, blocked=BLOCKED)


def candidates(model: MADE, noise: torch.Tensor, lam: float, runs: Iterable[RunSpec], *,
               tol: float = 0.0, snapshots: Sequence[int] = (0,), keep: int = 1,
               trace_extra: Optional[Mapping[str, np.ndarray]] = None,
               extra: Optional[dict] = None) -> list[Candidate]:
    """One harness candidate per run, all on the same ``model`` and ``noise``.

    The timed program is :func:`solve_samples`. Its traced twin records, per batch item, the L2
    error to the sample the timed program returned and the L2 change between iterates, plus the
    first ``keep`` samples at the iterations ``snapshots`` (and the final one); ``trace_extra``
    is added to those arrays (image shape, λ).
    """
    out = []
    for spec in runs:
        last: dict[str, torch.Tensor] = {}

        def program(spec=spec, last=last) -> ffsolve.SolveResult:
            result = solve_samples(model, noise, lam, spec.method, spec.block_size, tol)
            last["x"] = result.x
            return result

        def traced(spec=spec, last=last, program=program):
            # The error is measured to the timed program's own sample (the harness then checks
            # that the traced solve returns exactly that sample in as many iterations).
            final = last["x"] if "x" in last else program().x
            recorder = StreamingTrace(final, snapshots, keep)
            result = solve_samples(model, noise, lam, spec.method, spec.block_size, tol, recorder)
            arrays = recorder.arrays()
            return result, {
                "error_mean": arrays["error"].mean(axis=1),
                "error_std": arrays["error"].std(axis=1),
                "change_mean": arrays["change"].mean(axis=1),
                "change_std": arrays["change"].std(axis=1),
                "snapshot_iterations": arrays["snapshot_iterations"],
                "snapshots": arrays["snapshots"].astype(np.float32),
                **dict(trace_extra or {}),
            }

        out.append(Candidate(spec, program, traced, extra=dict(extra or {})))
    return out


def contract_candidates() -> list[Candidate]:
    """A tiny instance for tests/test_contract.py: a seeded MADE(20, [24, 24]), a batch of 3,
    every method of ``ffsolve.available_methods()`` through the same :func:`candidates` the
    workflow times (``ffsolve.solve`` on the sampling map; the blocked methods at a block size
    that divides T and one that does not). MADE has no fast path of its own: every run calls the
    full forward, so each must equal sequential bit for bit (no tolerance)."""
    from ffsolve.kit.seeds import seed_stream, torch_generator
    from ffsolve.solvers.core import _USES_BLOCKS

    nin, lam = 20, 1e-6
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_stream(7, "made", "contract", "init"))
        model = MADE(nin, [24, 24]).eval()
    with torch.no_grad():  # biases off zero, so every dimension has something to depend on
        for layer in model.masked_layers():
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=torch_generator(7, "made", "contract", "bias")))
    noise = logistic_noise(3, nin, seed_stream(7, "made", "contract", "sample_noise"))
    runs = []
    for method in ffsolve.available_methods():
        runs.extend([RunSpec(method, 5), RunSpec(method, 6)] if method in _USES_BLOCKS else [RunSpec(method)])
    return candidates(model, noise, lam, runs, snapshots=(0, 2), keep=2)
