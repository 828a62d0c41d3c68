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

import copy
import time
from itertools import pairwise
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

import ffsolve
from ffsolve.kit import Candidate, RunSpec, Tolerance, expand_runs, passed
from ffsolve.experiments.made.layout import BLOCKED
from ffsolve.experiments.made.density import logit_bounds
from ffsolve.experiments.made.model import LOG_SCALE_MAX, LOG_SCALE_MIN, MADE

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
    """f(x) = clamp(μ(x) + exp(log s(x)) · ε): triangular along axis 1 (one full forward per call).

    It carries a window evaluator (:class:`SamplingWindow`) for ``suffix_jacobi`` and
    ``sliding_jacobi``; every other method calls the full forward."""
    low, high = logit_bounds(lam)

    @torch.no_grad()
    def f(x: torch.Tensor) -> torch.Tensor:
        mean, log_scale = model(x)
        return (mean + torch.exp(log_scale) * noise).clamp(low, high)

    window = SamplingWindow(model, noise, lam)
    # Sliced products sum in another order than the full pass: not bitwise, so ``sequential``
    # keeps calling the full forward and stays the reference.
    return ffsolve.windowed(f, window, window.cost, bitwise=False)


def _reach(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per hidden layer, per unit: the largest input index the unit reads, through every layer
    (−1: none)."""
    reach, previous = [], torch.arange(masks[0].shape[1])
    for mask in masks[:-1]:
        reads = mask != 0
        reach.append(torch.where(reads, previous[None, :], -1).max(dim=1).values)
        previous = reach[-1]
    return reach


class SamplingWindow:
    """``f.window(x, start, stop)`` of the sampling map: dimensions [start, stop), computing only
    the hidden units that can still change.

    The window contract (:mod:`ffsolve.solvers.sliding`) says that within one solve ``start``
    never decreases and dimensions < start of ``x`` never change again. A hidden unit that reads
    only inputs before the previous call's ``start`` was therefore computed (then or earlier) from
    final inputs: its value is kept. Each call recomputes the units that read an input at or after
    the previous call's start, and of the output layer only the rows of dimensions [start, stop)
    (mean and log-scale). A call with ``start = 0`` begins a new solve (everything recomputed).

    This project's MADE has hidden degrees that rise with the unit index, so the units kept are a
    prefix of each layer and each layer's work is one product on a slice of its weight. A MADE
    whose units are not in that order gets no reuse (every unit recomputed; still correct).

    Sliced products may round differently from the full pass (the BLAS kernel blocks by shape),
    so the results are held to :func:`cache_tolerance`, as ``sequential_cache``'s are.
    ``cost(start, stop)`` is the last call's multiply-adds over a full pass's.
    """

    def __init__(self, model: MADE, noise: torch.Tensor, lam: float):
        layers = model.masked_layers()
        self.noise, self.dims = noise, model.nin
        self.low, self.high = logit_bounds(lam)
        self.layers = layers
        with torch.no_grad():
            reach = _reach([layer.mask.detach().cpu() for layer in layers])
        ordered = all(bool((r[1:] >= r[:-1]).all()) for r in reach)
        # Units whose reach is < p: a prefix when ordered; kept counts per previous start p.
        self.reach = [r.tolist() for r in reach] if ordered else None
        self.widths = [self.dims] + [len(r) for r in reach]
        self.full_macs = sum(a * b for a, b in pairwise(self.widths + [2 * self.dims]))
        self.hidden: list[torch.Tensor] = []
        self.previous_start = 0
        self.last_macs = self.full_macs

    def _kept(self, layer: int) -> int:
        if self.reach is None or self.previous_start == 0 or not self.hidden:
            return 0
        import bisect

        return bisect.bisect_left(self.reach[layer], self.previous_start)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if start == 0 or not self.hidden or self.hidden[0] is None or self.hidden[0].shape[0] != x.shape[0]:
            self.previous_start, self.hidden = 0, [None] * (len(self.layers) - 1)
        h, macs = x, 0
        for index, layer in enumerate(self.layers[:-1]):
            kept = self._kept(index)
            fresh = torch.relu(torch.nn.functional.linear(h, layer.masked_weight()[kept:],
                                                          layer.bias[kept:]))
            if kept:
                self.hidden[index][:, kept:] = fresh
            else:
                self.hidden[index] = fresh
            macs += (self.widths[index + 1] - kept) * h.shape[1]
            h = self.hidden[index]
        last = self.layers[-1]
        rows = torch.cat([torch.arange(start, stop), torch.arange(self.dims + start, self.dims + stop)])
        weight, bias = last.masked_weight(), last.bias
        if stop - start < self.dims:
            weight, bias = weight[rows], bias[rows]
        out = torch.nn.functional.linear(h, weight, bias)
        macs += 2 * (stop - start) * h.shape[1]
        width = stop - start
        mean, log_scale = out[:, :width], out[:, width:].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        self.previous_start, self.last_macs = start, macs
        return (mean + torch.exp(log_scale) * self.noise[:, start:stop]).clamp(self.low, self.high)

    def cost(self, start: int, stop: int) -> float:
        return self.last_macs / self.full_macs


def solve_samples(model: MADE, noise: torch.Tensor, lam: float, method: str,
                  block_size: Optional[int] = None, tol: float = 0.0,
                  recorder: Optional["StreamingTrace"] = None,
                  deadline: Optional[float] = None) -> ffsolve.SolveResult:
    """Sample a batch (one row of ``noise`` per sample) with ``method``, starting from zeros;
    ``deadline`` (a ``time.perf_counter()`` value or an ``ffsolve.Deadline``) stops it after the
    step in progress."""
    f = sampling_map(model, noise, lam)
    if recorder is not None:
        f = recorder.wrap(f)
    x0 = torch.zeros_like(noise)
    result = ffsolve.solve(f, x0, method=method, block_size=block_size, tol=tol, axis=1,
                           deadline=deadline)
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
        self.work: list[float] = []  # per call of a window, its work in passes

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

        window = getattr(f, "window", None)
        if window is None:
            return traced

        cost = getattr(f, "window_cost", None)

        def traced_window(x, start, stop):  # the same iterates, through the map's window
            self._note(x)
            out = window(x, start, stop)
            # Each step's work, for the figure's time axis (windows cost unequal shares of a pass).
            self.work.append(cost(start, stop) if cost is not None else (stop - start) / x.shape[1])
            return out

        return ffsolve.windowed(traced, traced_window, cost, bitwise=getattr(f, "bitwise", False))

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
            **({"cumulative_network_evaluations": np.concatenate([[0.0], np.cumsum(self.work)])}
               if self.work else {}),
        }


def _rows_l2(a: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(a.double(), dim=1).cpu().numpy()


# --------------------------------------------------------------------------- sequential_cache
# The stronger sequential baseline (issue 11): one dimension per step, as ``sequential``, but each
# step computes only what the next output needs instead of the whole MADE.

CACHED_METHODS = ("sequential_cache",)
# ffsolve.solve methods that call the map's window (SamplingWindow): sliced products, so held to
# cache_tolerance like sequential_cache.
WINDOWED_METHODS = ("suffix_jacobi", "sliding_jacobi")


def _earliest(reads: torch.Tensor, when: torch.Tensor, never: int) -> torch.Tensor:
    """Per column j of the boolean ``(rows, units)`` matrix ``reads``: the smallest ``when[i]``
    over the rows i that read j, or ``never`` when no row does."""
    return torch.where(reads, when[:, None], never).min(dim=0).values


class CachedSampler:
    """``sequential_cache``: sequential sampling with MADE's first layer cached and later layers cut
    down to what the next output reads.

    Step t (t = 0 .. D − 1) writes dimension t, exactly as ``sequential``'s call t does, but:

    - the first layer's pre-activations ``a = b₁ + W₁ x`` are kept between steps and updated by one
      rank-1 term when dimension t is written: ``a += x_t · W₁[:, t]`` (B·H₁ multiply-adds instead
      of B·H₁·D for the whole first layer);
    - every later layer computes only the hidden units that an output ≤ t reads, read off the
      masks: output t reads the last hidden layer's units its mask row selects, each of those reads
      the previous layer's units its row selects, and so on. Units are reordered once (stably) by
      the first step that needs them, so at step t each layer computes a *prefix* of its units from
      a prefix of the previous layer's (a slice, no gather); for this project's MADE, whose hidden
      degrees rise with the unit index, the order is the identity. Units outside the prefix reach
      the outputs ≤ t only through masked weights, i.e. exact zeros;
    - of the output layer only the two rows of dimension t (mean and log-scale) are computed.

    ``restrict=False`` computes every unit of the later layers at every step (the first layer still
    cached, still two output rows): the variant that shows what the mask restriction buys.

    Work is counted in multiply-adds, the unit of a full pass (which multiplies the masked zeros
    too): ``network_evaluations`` is the sum over steps of the multiply-adds of that step divided
    by those of one full pass, D·H₁ + Σ H_{l−1}·H_l + H_L·2D. ``iterations`` is D, one parallel step
    per dimension, as for ``sequential``.

    The result is not bit-for-bit ``sequential``'s: the first layer sums x_0 W₁[:,0] + x_1 W₁[:,1] +
    ... one term at a time, in input order after the bias, while the full pass's matrix product
    sums in the BLAS kernel's blocked order; the later layers' shorter sums may also be blocked
    differently. :func:`cache_tolerance` bounds the difference.
    """

    def __init__(self, model: MADE, noise: torch.Tensor, lam: float, restrict: bool = True):
        layers = model.masked_layers()
        self.model, self.noise, self.lam, self.restrict = model, noise, lam, restrict
        self.dims = dims = model.nin
        self.low, self.high = logit_bounds(lam)
        with torch.no_grad():
            # Planned on the CPU (the unit orders and prefix counts), then moved to the noise's device.
            weights = [(layer.weight * layer.mask).detach().cpu() for layer in layers]
            biases = [layer.bias.detach().cpu() for layer in layers]
            masks = [layer.mask.detach().cpu() != 0 for layer in layers]
            # needs[l][k]: the first step whose output reads unit k of hidden layer l (dims: never).
            needs = [_earliest(masks[-1][:dims] | masks[-1][dims:], torch.arange(dims), dims)]
            for mask in reversed(masks[1:-1]):  # a unit is needed once a needed unit reads it
                needs.insert(0, _earliest(mask, needs[0], dims))
            orders = [torch.sort(need, stable=True) for need in needs]
            perms = [order.indices for order in orders]
            steps = torch.arange(dims)
            # counts[l][t]: units of hidden layer l that step t computes (a prefix in the new order)
            self.counts = [
                torch.searchsorted(order.values, steps, right=True).tolist() if restrict
                else [len(order.values)] * dims
                for order in orders
            ]
            device = noise.device
            # First layer: W₁'s columns as contiguous rows, one per input dimension.
            self.columns = weights[0][perms[0]].T.contiguous().to(device)
            self.first_bias = biases[0][perms[0]].to(device)
            # Middle layers as (in, out) matrices, rows and columns in the new orders.
            self.hidden = [
                (weights[l][perms[l]][:, perms[l - 1]].T.contiguous().to(device), biases[l][perms[l]].to(device))
                for l in range(1, len(perms))
            ]
            # Output layer: for dimension t, its (H_L, 2) columns (mean, log-scale) and 2 biases.
            last = weights[-1][:, perms[-1]]
            self.out_weights = torch.stack([last[:dims], last[dims:]], dim=2).contiguous().to(device)
            self.out_bias = torch.stack([biases[-1][:dims], biases[-1][dims:]], dim=1).contiguous().to(device)
        widths = [dims] + [len(p) for p in perms] + [2 * dims]
        self.full_pass_macs = sum(a * b for a, b in pairwise(widths))
        self.step_macs = [self._macs(t) for t in range(dims)]

    def _macs(self, t: int) -> int:
        """Multiply-adds of step t (per batch item): the rank-1 update (none after the last
        dimension), the later layers' prefixes, the two output rows."""
        counts = [c[t] for c in self.counts]
        update = self.columns.shape[1] if t < self.dims - 1 else 0
        return update + sum(a * b for a, b in pairwise(counts)) + 2 * counts[-1]

    def network_evaluations(self, steps: int) -> float:
        return sum(self.step_macs[:steps]) / self.full_pass_macs

    def cumulative_work(self) -> np.ndarray:
        """Network evaluations done before each step and after the last (length D + 1): where
        each iterate of the trace sits in work, the steps being of unequal cost."""
        return np.concatenate([[0.0], np.cumsum(self.step_macs, dtype=np.float64)]) / self.full_pass_macs

    @torch.no_grad()
    def step(self, x: torch.Tensor, cache: torch.Tensor, t: int) -> None:
        """Write dimension t of ``x`` and fold it into the first-layer ``cache`` (both in place)."""
        counts = [c[t] for c in self.counts]
        h = torch.relu(cache[:, : counts[0]])
        for (weight, bias), n_in, n_out in zip(self.hidden, counts, counts[1:]):
            h = torch.relu(torch.addmm(bias[:n_out], h, weight[:n_in, :n_out]))
        out = torch.addmm(self.out_bias[t], h, self.out_weights[t, : counts[-1]])
        mean, log_scale = out[:, 0], out[:, 1].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        # The same elementwise formula as sampling_map (elementwise ops round alike on any shape).
        value = (mean + torch.exp(log_scale) * self.noise[:, t]).clamp(self.low, self.high)
        x[:, t] = value
        if t < self.dims - 1:
            cache.addr_(value, self.columns[t])

    @torch.no_grad()
    def run(self, recorder: StreamingTrace | None = None, tol: float = 0.0,
            deadline: Optional[float] = None) -> ffsolve.SolveResult:
        """Sample from zeros in D steps; ``recorder`` sees the iterate before every step and after
        the last, as it would through ``sequential``'s calls of f. ``tol`` is unused (recorded),
        as for ``sequential``. ``deadline`` (a ``time.perf_counter()`` value or an
        ``ffsolve.Deadline``) stops the loop after the step in progress (``stopped_by="deadline"``,
        not converged)."""
        x = torch.zeros_like(self.noise)
        cache = self.first_bias.expand(x.shape[0], -1).clone()
        steps = self.dims
        for t in range(self.dims):
            if recorder is not None:
                recorder._note(x)
            self.step(x, cache, t)
            if t + 1 < self.dims and passed(deadline, (t + 1) / self.dims):
                steps = t + 1
                break
        if recorder is not None:
            recorder.finish(x)
        cut = steps < self.dims
        return ffsolve.SolveResult(
            x=x, iterations=steps, converged=not cut, method="sequential_cache", block_size=None,
            tol=tol, sequence_length=self.dims, network_evaluations=self.network_evaluations(steps),
            stopped_by="deadline" if cut else None,
        )


FLOAT32_EPS = float(np.finfo(np.float32).eps)


CACHE_FACTOR = 4.0  # each float32 sampler assumed within 2e of the exact sample
PROBE_BATCH, PROBE_SEED = 16, 0  # the noise measured when the caller gives none


def cache_tolerance(model: MADE, lam: float, noise: Optional[torch.Tensor] = None,
                    factor: float = CACHE_FACTOR, sample: Optional[torch.Tensor] = None) -> Tolerance:
    """How close ``sequential_cache`` must come to ``sequential``: the float32 sample's own error
    against a float64 evaluation of the same sampling, measured, times ``factor``.

    The float32 sample (``ffsolve.solve``'s Jacobi on the sampling map, bit for bit
    ``sequential``'s; or ``sample`` when the caller has it) and the same sample computed in float64
    (a float64 copy of the model and the noise, through :class:`CachedSampler`: float64 rounding
    is negligible here, whatever the summation order) give e = max |x32 − x64|, the rounding
    carried along the autoregressive chain included. ``sequential_cache`` computes the same
    numbers in float32 in another summation order; assuming each float32 sampler within 2 e of the
    exact sample, the triangle inequality gives

        |x_cache − x_sequential| <= 4 e.

    e is floored at one rounding of the largest sample (u · |logit(λ)|). ``noise`` is the noise the
    samples are drawn with (without it, a probe batch of 16 from seed 0).
    """
    if noise is None:
        noise = logistic_noise(PROBE_BATCH, model.nin, PROBE_SEED,
                               next(model.parameters()).device)
    if sample is None:
        sample = solve_samples(model, noise, lam, "jacobi").x
    device = noise.device if noise.device.type != "mps" else torch.device("cpu")  # no float64 there
    exact_model = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    exact = CachedSampler(exact_model, noise.to(device=device, dtype=torch.float64), lam).run().x
    error = float((sample.to(device=device, dtype=torch.float64) - exact).abs().max())
    reach = max(abs(bound) for bound in logit_bounds(lam))
    floor = FLOAT32_EPS / 2 * reach
    atol = factor * max(error, floor)
    why = (
        "sequential_cache updates MADE's first-layer pre-activations one input at a time (a rank-1 "
        "update in input order) and computes only prefixes of the later layers, so its float32 sums "
        "run in another order than the full pass's matrix products: bit-for-bit equality with "
        "sequential cannot hold. Derived from the float32 sample's own error against the same "
        f"sampling in float64 (a float64 copy of the model and noise; {noise.shape[0]} samples of "
        f"{noise.shape[1]} dimensions): e = max|x32 - x64| = {error:.3g} in logit units (floored "
        f"at u·|logit(lambda)| = {floor:.3g}), times {factor:g}: each float32 sampler assumed "
        "within 2e of the exact sample, so two differ by at most 4e (triangle inequality)"
    )
    return Tolerance(atol=atol, rtol=0.0, why=why)


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
        tolerance, run_extra, work = None, dict(extra or {}), {}
        if spec.method in CACHED_METHODS:
            started = time.perf_counter()
            sampler = CachedSampler(model, noise, lam)
            run_extra["cache_setup_s"] = time.perf_counter() - started  # once per model, untimed
            tolerance = cache_tolerance(model, lam, noise)
            work["cumulative_network_evaluations"] = sampler.cumulative_work()

            def solve(recorder=None, sampler=sampler, deadline=None) -> ffsolve.SolveResult:
                return sampler.run(recorder, tol=tol, deadline=deadline)
        else:
            if spec.method in WINDOWED_METHODS:
                tolerance = cache_tolerance(model, lam, noise)

            def solve(recorder=None, spec=spec, deadline=None) -> ffsolve.SolveResult:
                return solve_samples(model, noise, lam, spec.method, spec.block_size, tol, recorder,
                                     deadline)

        def program(solve=solve, last=last, deadline=None) -> ffsolve.SolveResult:
            # deadline: auto's pilot stops a losing run after the step in progress.
            result = solve(deadline=deadline)
            if deadline is None or result.stopped_by != "deadline":
                last["x"] = result.x
            return result

        def traced(solve=solve, last=last, program=program, work=work):
            # The error is measured to the timed program's own sample (the harness then checks
            # that the traced solve returns exactly that sample in as many iterations).
            final = last["x"] if "x" in last else program().x
            recorder = StreamingTrace(final, snapshots, keep)
            result = solve(recorder)
            arrays = recorder.arrays()
            if "cumulative_network_evaluations" in arrays:
                work = {"cumulative_network_evaluations": arrays["cumulative_network_evaluations"]}
            return result, {
                "error_mean": arrays["error"].mean(axis=1),
                "error_std": arrays["error"].std(axis=1),
                "change_mean": arrays["change"].mean(axis=1),
                "change_std": arrays["change"].std(axis=1),
                "snapshot_iterations": arrays["snapshot_iterations"],
                "snapshots": arrays["snapshots"].astype(np.float32),
                **work,
                **dict(trace_extra or {}),
            }

        out.append(Candidate(spec, program, traced, tolerance=tolerance, extra=run_extra))
    return out


def contract_candidates() -> list[Candidate]:
    """A tiny instance for tests/experiments/test_contract.py: a seeded MADE(20, [24, 24]), a batch of 3,
    every method of ``ffsolve.available_methods()`` through the same :func:`candidates` the
    workflow times (``ffsolve.solve`` on the sampling map; the blocked methods at a block size
    that divides T and one that does not), and MADE's fast path ``sequential_cache``. Every
    ``ffsolve.solve`` run calls the full forward, so each must equal sequential bit for bit (no
    tolerance); ``sequential_cache`` sums in another order and is held to :func:`cache_tolerance`."""
    from ffsolve.kit import seed_stream, torch_generator, uses_blocks

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
        runs.extend([RunSpec(method, 5), RunSpec(method, 6)] if uses_blocks(method) else [RunSpec(method)])
    runs.extend(RunSpec(method) for method in CACHED_METHODS)
    return candidates(model, noise, lam, runs, snapshots=(0, 2), keep=2)

