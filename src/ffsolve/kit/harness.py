"""One measurement harness for every experiment (DESIGN.md §6–7).

For one experiment and dataset, :func:`measure` runs every configured program in one process on the
same weights and noise, interleaves their timed repeats round-robin (so drift of the machine hits
every method alike), and checks the output of the *timed* calls themselves against the sequential
reference. :func:`write_runs` turns the measurements into validated records, one per run.

A program is a zero-argument callable returning an :class:`ffsolve.SolveResult`: the thing whose
time is reported is the thing whose output is checked. An optional traced program (the same
computation with per-iteration recording, never timed) must give the same output and iteration
count as the timed one; a mismatch stops the job.

Speedups are only ever ratios of two times from one :func:`measure` call.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from ffsolve.kit.io import write_npz
from ffsolve.kit.record import write_metrics
from ffsolve.kit.runs import RunSpec, parse_run_name
from ffsolve.solvers.core import SolveResult
from ffsolve.timing import Timing, synchronize, timing_from

log = logging.getLogger(__name__)

Program = Callable[[], SolveResult]
TracedProgram = Callable[[], "tuple[SolveResult, Mapping[str, Any]]"]


@dataclass(frozen=True)
class TimingSettings:
    """``timing.*``: timed repeats per method (interleaved), untimed warm-up rounds, and the
    compute threads of the timed job (``None``: every core it holds; applied by ``ffsolve.jobs``),
    and the pilot budget of ``method: auto`` (a fraction of one predicted sequential run;
    :mod:`ffsolve.kit.auto`)."""

    repeats: int = 5
    warmup: int = 1
    threads: Optional[int] = None
    min_sample_s: float = 0.0
    auto_pilot_budget: float = 0.1


@dataclass(frozen=True)
class Tolerance:
    """Closeness accepted where bit-for-bit equality cannot hold, with the rule and the reason.

    The rule is elementwise ``|x − ref| <= atol + rtol·|ref|``. ``why`` says why bitwise equality
    is impossible for this path (e.g. "the cached path runs the convolutions on other shapes, so
    the backend may sum in another order") and why the bound is defensible.
    """

    atol: float
    rtol: float
    why: str

    @property
    def rule(self) -> str:
        return f"|x - ref| <= {self.atol:g} + {self.rtol:g}·|ref| elementwise"

    def holds(self, x: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> bool:
        return all(
            a.shape == b.shape
            and bool(np.all(np.abs(a.astype(np.float64) - b.astype(np.float64))
                            <= self.atol + self.rtol * np.abs(b.astype(np.float64))))
            for a, b in zip(x, ref)
        )

    def as_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "rule": self.rule, "why": self.why}


@dataclass
class Candidate:
    """One run to measure.

    Attributes:
        run: the run's name (``gs_jacobi_b16``) or spec; the results folder.
        program: the timed program.
        traced: the same computation with per-iteration recording; returns the result and the
            arrays to save in ``trace.npz``. Run once, untimed, and checked against ``program``.
        tolerance: ``None`` when the output must equal the reference bit for bit; else the
            declared tolerance (and the record then says ``within_tolerance``).
        extra: experiment-specific fields added to the record (model size, checkpoint, ...).
    """

    run: RunSpec | str
    program: Program
    traced: Optional[TracedProgram] = None
    tolerance: Optional[Tolerance] = None
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> RunSpec:
        return self.run if isinstance(self.run, RunSpec) else parse_run_name(self.run)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Measurement:
    """What :func:`measure` found for one candidate."""

    candidate: Candidate
    result: SolveResult
    timing: Timing
    bitwise_equal: bool
    max_abs_diff: float
    within_tolerance: Optional[bool]
    trace: Mapping[str, Any] = field(default_factory=dict)
    interleaved_with: tuple[str, ...] = ()
    session: str = ""
    calls_per_repeat: int = 1

    @property
    def exact(self) -> bool:
        return self.bitwise_equal


@dataclass(frozen=True)
class RunContext:
    """What every record of one :func:`measure` call shares."""

    experiment: str
    dataset: str
    seed: int
    device: str
    batch: int
    threads: Optional[int] = None
    reference: str = "sequential"


def to_numpy_leaves(x: Any) -> list[np.ndarray]:
    """The arrays of ``x`` (an array, or a tuple/list/dict of them) as host NumPy arrays."""
    if isinstance(x, Mapping):
        return [leaf for key in sorted(x) for leaf in to_numpy_leaves(x[key])]
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in to_numpy_leaves(item)]
    if hasattr(x, "detach"):  # torch
        return [x.detach().cpu().numpy()]
    return [np.asarray(x)]


def bitwise_equal(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    """Same number of arrays, same dtypes and shapes, same bits (NaN is never equal)."""
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b)
    )


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    diffs = [float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
             for x, y in zip(a, b)]
    return max(diffs, default=0.0)


def measure(
    candidates: Iterable[Candidate],
    *,
    repeats: int,
    warmup: int = 1,
    reference: str = "sequential",
    output: Callable[[SolveResult], Any] = lambda result: result.x,
    sync: Callable[[Any], Any] = synchronize,
    clock: Callable[[], float] = time.perf_counter,
    min_sample_s: float = 0.0,
) -> dict[str, Measurement]:
    """Time every candidate in this process, repeats interleaved, and check the timed outputs.

    Each round runs every candidate once, the order rotated by one each round so no method always
    follows the same neighbour. ``warmup`` untimed rounds come first (JIT compilation, allocator).
    A program faster than ``min_sample_s`` (judged by its last warm-up call) runs several times
    back to back within each timed sample, as ``timeit`` does, so that a millisecond program is
    not timed by single noisy calls; the record gives the time per call and ``calls_per_repeat``.
    The output of every timed call must be identical (same bits, same iteration count) to the
    first timed call of the same candidate, else the program is not deterministic and the job
    stops. The first timed output of each candidate is compared with the reference candidate's.

    Returns the measurements by run name, in the candidates' order.
    """
    candidates = list(candidates)
    names = [c.name for c in candidates]
    # One id per call: records that share it were timed in one process, interleaved, so their
    # times may be divided; the tables refuse a ratio between different sessions.
    session = uuid.uuid4().hex[:12]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate runs repeat a name: {names}")
    if reference not in names:
        raise ValueError(f"the reference run {reference!r} is not among the candidates {names}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")

    inner = {name: 1 for name in names}
    for _ in range(warmup):
        for candidate in candidates:
            start = clock()
            sync(output(candidate.program()))
            seconds = clock() - start
            if min_sample_s > 0 and seconds > 0:
                inner[candidate.name] = max(1, min(1000, math.ceil(min_sample_s / seconds)))

    times: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, tuple[SolveResult, list[np.ndarray]]] = {}
    for round_index in range(repeats):
        shift = round_index % len(candidates)
        for candidate in candidates[shift:] + candidates[:shift]:
            results = []
            start = clock()
            for _ in range(inner[candidate.name]):
                results.append(candidate.program())
                sync(output(results[-1]))
            times[candidate.name].append((clock() - start) / inner[candidate.name])
            for result in results:  # every call's output is checked, after the clock stopped
                leaves = to_numpy_leaves(output(result))
                _check_finite(candidate.name, leaves)
                if candidate.name not in first:
                    first[candidate.name] = (result, leaves)
                else:
                    _check_same(candidate.name, "timed repeat", first[candidate.name], (result, leaves))
        log.info("timing round %d/%d done", round_index + 1, repeats)

    reference_leaves = first[reference][1]
    measurements = {}
    for candidate in candidates:
        result, leaves = first[candidate.name]
        _check_bound(candidate.name, result)
        trace: Mapping[str, Any] = {}
        if candidate.traced is not None:
            traced_result, trace = candidate.traced()
            _check_same(candidate.name, "traced run", first[candidate.name],
                        (traced_result, to_numpy_leaves(output(traced_result))))
        equal = bitwise_equal(leaves, reference_leaves)
        within = None if candidate.tolerance is None else candidate.tolerance.holds(leaves, reference_leaves)
        measurements[candidate.name] = Measurement(
            candidate=candidate,
            result=result,
            timing=timing_from(times[candidate.name], warmup),
            bitwise_equal=equal,
            max_abs_diff=max_abs_diff(leaves, reference_leaves),
            within_tolerance=within,
            trace=trace,
            interleaved_with=tuple(n for n in names if n != candidate.name),
            session=session,
            calls_per_repeat=inner[candidate.name],
        )
        m = measurements[candidate.name]
        log.info("%s: %d/%d iterations, %.3g network evaluations, converged=%s, bitwise=%s%s, "
                 "max |diff| %.3g, median %.4g s (IQR %.2g s)", candidate.name, result.iterations,
                 result.sequence_length, result.network_evaluations, result.converged, equal,
                 "" if within is None else f", within tolerance={within}", m.max_abs_diff,
                 m.timing.median_s, m.timing.iqr_s)
    return measurements


def record(measurement: Measurement, context: RunContext) -> dict:
    """The run record of DESIGN.md §6 (validated when written by :func:`write_runs`)."""
    m, spec, result = measurement, measurement.candidate.spec, measurement.result
    timing = {**m.timing.as_dict(), "interleaved_with": list(m.interleaved_with), "session": m.session,
              "calls_per_repeat": m.calls_per_repeat}
    return {
        **m.candidate.extra,
        "experiment": context.experiment,
        "dataset": context.dataset,
        "run": spec.name,
        "method": spec.method,
        "block_size": spec.block_size,
        "budget": spec.budget,
        "tol": float(result.tol),
        "sequence_length": int(result.sequence_length),
        "iterations": int(result.iterations),
        "network_evaluations": float(result.network_evaluations),
        "converged": bool(result.converged),
        "bitwise_equal": m.bitwise_equal,
        "max_abs_diff": m.max_abs_diff,
        "tolerance": None if m.candidate.tolerance is None else m.candidate.tolerance.as_dict(),
        "within_tolerance": m.within_tolerance,
        "wall_time_s": m.timing.median_s,
        "timing": timing,
        "batch": int(context.batch),
        "device": context.device,
        "seed": int(context.seed),
        **({"threads": int(context.threads)} if context.threads else {}),
        "reference": context.reference,
    }


def write_runs(
    measurements: Mapping[str, Measurement],
    context: RunContext,
    metrics_paths: Mapping[str, Any],
    trace_paths: Optional[Mapping[str, Any]] = None,
) -> dict[str, dict]:
    """Write ``metrics.json`` (and ``trace.npz``) of every run; every expected path is written."""
    missing = sorted(set(metrics_paths) - set(measurements))
    if missing:
        raise ValueError(f"no measurement for the runs {missing} the workflow expects")
    records = {}
    for name, path in metrics_paths.items():
        m = measurements[name]
        if trace_paths is not None:
            arrays = {"iterations": np.asarray(m.result.iterations), **dict(m.trace)}
            write_npz(trace_paths[name], arrays)
        records[name] = write_metrics(path, record(m, context))
    return records


def _check_finite(name: str, leaves: Sequence[np.ndarray]) -> None:
    for leaf in leaves:
        if np.issubdtype(leaf.dtype, np.inexact) and not np.all(np.isfinite(leaf)):
            raise FloatingPointError(f"run {name!r} produced non-finite output")


def _check_bound(name: str, result: SolveResult) -> None:
    if result.iterations > result.sequence_length:
        raise RuntimeError(
            f"run {name!r} took {result.iterations} parallel steps for {result.sequence_length} "
            "positions: the triangular bound is broken (a solver bug)"
        )


def _check_same(name: str, what: str, expected, got) -> None:
    (result_a, leaves_a), (result_b, leaves_b) = expected, got
    if result_a.iterations != result_b.iterations or not bitwise_equal(leaves_a, leaves_b):
        raise RuntimeError(
            f"run {name!r}: a {what} differs from the first timed call ({result_b.iterations} vs "
            f"{result_a.iterations} iterations, max |diff| {max_abs_diff(leaves_a, leaves_b):.3g}); "
            "the program is not deterministic, so its timing and its check would not describe "
            "the same computation"
        )
