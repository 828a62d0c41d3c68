"""One measurement harness for every experiment (DESIGN.md §6–7).

For one experiment and dataset, :func:`measure` runs every configured program in one process on the
same weights and noise, interleaves their timed repeats round-robin (so drift of the machine hits
every method alike), and checks the output of the *timed* calls themselves against the sequential
reference. :func:`write_runs` turns the measurements into validated records, one per run.

A program is a zero-argument callable returning an :class:`ffsolve.SolveResult`: the thing whose
time is reported is the thing whose output is checked. An optional traced program (the same
computation with per-iteration recording, never timed) must give the same output and iteration
count as the timed one; a mismatch stops the job. It runs after the timed rounds, or, where it
runs the timed program's own compiled code (``Candidate.traced_warms_up``), as its first warm-up
call.

The statistics (DESIGN.md §7): warm-up rounds are untimed; where ``min_sample_s`` asks for
several calls per timed repeat, their number is calibrated on one more untimed call made after
the warm-up (never on the warm-up call itself, which for JAX is the compile). Calls are timed one
by one, or, when one call is shorter than :data:`MIN_GROUP_S`, in groups of equal size that
reach it; the reported time is the median over every sample of every repeat (a sample's time is
per call), so two runs' medians are the same statistic whatever their call counts. Below five
repeats the spread is the minimum and maximum, not an interquartile range
(:func:`ffsolve.timing.timing_from`).

Every record says what stopped its run (``stopped_by``, :data:`ffsolve.kit.record.STOP_REASONS`):
the solver's own word where its result carries one, an experiment's (``Candidate.extra``) where
it knows better, else :func:`stop_reason` derives it from the result. A declared tolerance is met
only by a converged run: a truncated or stopped-early run is never ``within_tolerance``.

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
from ffsolve.kit.record import STOP_REASONS, write_metrics
from ffsolve.kit.runs import RunSpec, is_sequential_baseline, parse_run_name
from ffsolve.runtime import threads_in_use
from ffsolve.solvers.core import SolveResult
from ffsolve.timing import Timing, synchronize, timing_from

log = logging.getLogger(__name__)

Program = Callable[[], SolveResult]
TracedProgram = Callable[[], "tuple[SolveResult, Mapping[str, Any]]"]

# Calls shorter than this are timed in groups that reach it (a clock read and a device sync would
# otherwise be a visible part of the time); calls at least this long are timed one by one.
MIN_GROUP_S = 0.01
# The most calls of one program per timed repeat.
MAX_CALLS_PER_REPEAT = 1000


@dataclass(frozen=True)
class TimingSettings:
    """``timing.*``: timed repeats per method (interleaved), untimed warm-up rounds, the
    compute threads of the timed job (``None``: every core it holds; applied by ``ffsolve.workflow.jobs``),
    and two settings of ``method: auto`` (:mod:`ffsolve.kit.auto`): whether an exact ``auto`` run
    may be answered by a run that is only within its declared tolerance (default: bitwise runs
    only), and replay mode (the decisions kept in the job's decisions file, no pilot)."""

    repeats: int = 5
    warmup: int = 1
    threads: Optional[int] = None
    min_sample_s: float = 0.0
    auto_allow_within_tolerance: bool = False
    auto_replay: bool = False


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
        prepare: called once, untimed, after the warm-up rounds and before any timed call (an
            ``auto`` run decides there when no warm-up round called it first).
        traced_warms_up: the traced program runs the timed program's own compiled code (JAX:
            the same executables, one step at a time; PyTorch eager: the same operations on the
            same shapes), so it warms the program up: the first
            warm-up round then calls it in place of the program, and it is not run again after
            the timed rounds (one whole run saved; its output is checked all the same).
    """

    run: RunSpec | str
    program: Program
    traced: Optional[TracedProgram] = None
    tolerance: Optional[Tolerance] = None
    extra: dict = field(default_factory=dict)
    prepare: Optional[Callable[[], Any]] = None
    traced_warms_up: bool = False

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
    calls_per_sample: int = 1
    calibration_s: Optional[float] = None

    @property
    def exact(self) -> bool:
        return self.bitwise_equal

    @property
    def stopped_by(self) -> str:
        """What stopped the run: the experiment's word (``extra["stopped_by"]``) if it gave one,
        else :func:`stop_reason` of the result."""
        given = self.candidate.extra.get("stopped_by")
        if given is not None:
            return normalize_stop(given)
        return stop_reason(self.result, self.candidate.spec)


@dataclass(frozen=True)
class RunContext:
    """What every record of one :func:`measure` call shares. ``threads``: the compute threads of
    the job (``ffsolve.workflow.jobs`` passes the count it set; ``None``: the count in force,
    :func:`ffsolve.runtime.threads_in_use`)."""

    experiment: str
    dataset: str
    seed: int
    device: str
    batch: int
    threads: Optional[int] = None
    reference: str = "sequential"


# Other words for a stop reason: the solvers say ``max_iters`` where a record says ``budget``.
_STOP_SYNONYMS = {"max_iters": "budget"}


def normalize_stop(reason: Any) -> str:
    """``"fixed point"``, ``"Fixed-Point"`` -> ``"fixed_point"``; ``"max_iters"`` -> ``"budget"``:
    one spelling per stop reason."""
    word = str(reason).strip().lower().replace(" ", "_").replace("-", "_")
    return _STOP_SYNONYMS.get(word, word)


def stop_reason(result: SolveResult, spec: Optional[RunSpec] = None) -> str:
    """What stopped the run that gave ``result`` (one of :data:`~ffsolve.kit.record.STOP_REASONS`).

    A sequential baseline (``sequential*``, ``bptt*``, ``forward*``, by the run's or the
    result's method) is ``"sequential"``. Otherwise the result's own ``stopped_by`` where the
    solver says it, else derived: not converged is ``"budget"`` (a step budget or ``max_iters``
    ran out); converged at ``tol > 0`` is ``"tolerance"``; converged at tol 0 after T steps is
    ``"exact_prefix"`` (the count bound), before T steps ``"fixed_point"`` (a step changed
    nothing). Experiments with other stops (an early-stop rule, a scan's log-depth bound) say so
    in ``Candidate.extra["stopped_by"]``.
    """
    methods = [str(getattr(result, "method", "") or "")] + ([spec.method] if spec is not None else [])
    if any(m and is_sequential_baseline(m) for m in methods):
        return "sequential"
    own = getattr(result, "stopped_by", None)
    if own is not None:
        reason = normalize_stop(own)
        if reason in STOP_REASONS:
            return reason
        log.warning("result of %s says stopped_by=%r, not one of %s; deriving it instead",
                    methods[-1], own, sorted(STOP_REASONS))
    if not result.converged:
        return "budget"
    if float(result.tol) > 0:
        return "tolerance"
    if result.iterations >= result.sequence_length:
        return "exact_prefix"
    return "fixed_point"


def calibrate(seconds: float, min_sample_s: float) -> tuple[int, int]:
    """``(calls per timed repeat, calls per timed sample)`` for a program that took ``seconds``.

    A repeat holds enough calls to last ``min_sample_s`` (at most :data:`MAX_CALLS_PER_REPEAT`);
    a call shorter than :data:`MIN_GROUP_S` is timed in groups that reach it, the repeat's calls
    then a whole number of groups. ``min_sample_s`` 0, or a call the clock did not see, gives one
    call timed alone.
    """
    if min_sample_s <= 0 or seconds <= 0:
        return 1, 1

    def enough(target: float) -> int:  # calls to reach target (a clock's last bit not counted)
        return max(1, math.ceil(target / seconds * (1 - 1e-9)))

    group = 1 if seconds >= MIN_GROUP_S else min(MAX_CALLS_PER_REPEAT, enough(MIN_GROUP_S))
    calls = enough(min_sample_s)
    calls = min(math.ceil(calls / group) * group, (MAX_CALLS_PER_REPEAT // group) * group)
    return max(calls, group), group


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
    follows the same neighbour. ``warmup`` untimed rounds come first (JIT compilation, allocator),
    then each candidate's ``prepare`` (untimed), if it has one.
    With ``min_sample_s`` > 0, one more untimed call of each candidate after the warm-up (two
    when ``warmup`` is 0, the second one measured) calibrates it (:func:`calibrate`): a program
    faster than ``min_sample_s`` runs several times back to back within each timed repeat, as
    ``timeit`` does, and calls shorter than :data:`MIN_GROUP_S` are timed in groups. Every call
    (or group, its time divided by its size) is one sample; the median is over all samples of all
    repeats, and the record gives ``calls_per_repeat`` and ``calls_per_sample``.
    The output of every timed call must be identical (same bits, same iteration count) to the
    first timed call of the same candidate, else the program is not deterministic and the job
    stops. The first timed output of each candidate is compared with the reference candidate's.
    A candidate with a declared tolerance is ``within_tolerance`` only if its run converged.

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
    group = {name: 1 for name in names}
    calibration: dict[str, Optional[float]] = {name: None for name in names}
    traced_runs: dict[str, tuple[SolveResult, Mapping[str, Any]]] = {}
    for round_index in range(warmup):
        for candidate in candidates:
            if round_index == 0 and candidate.traced is not None and candidate.traced_warms_up:
                traced_runs[candidate.name] = candidate.traced()
                sync(output(traced_runs[candidate.name][0]))
            else:
                sync(output(candidate.program()))
    for candidate in candidates:
        if candidate.prepare is not None:
            candidate.prepare()
    if min_sample_s > 0:
        # Calibrated on a call after the warm-up: the warm-up call itself may be the compile.
        for candidate in candidates:
            if warmup == 0:
                sync(output(candidate.program()))
            start = clock()
            sync(output(candidate.program()))
            seconds = clock() - start
            calibration[candidate.name] = seconds
            inner[candidate.name], group[candidate.name] = calibrate(seconds, min_sample_s)

    times: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, tuple[SolveResult, list[np.ndarray]]] = {}
    for round_index in range(repeats):
        shift = round_index % len(candidates)
        for candidate in candidates[shift:] + candidates[:shift]:
            results = []
            size = group[candidate.name]
            for _ in range(inner[candidate.name] // size):
                start = clock()
                for _ in range(size):
                    results.append(candidate.program())
                    sync(output(results[-1]))
                times[candidate.name].append((clock() - start) / size)
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
            traced_result, trace = (traced_runs[candidate.name] if candidate.name in traced_runs
                                    else candidate.traced())
            _check_same(candidate.name, "traced run", first[candidate.name],
                        (traced_result, to_numpy_leaves(output(traced_result))))
        equal = bitwise_equal(leaves, reference_leaves)
        within = None
        if candidate.tolerance is not None:
            # A truncated or stopped-early run is inexact whatever its distance: it never passes.
            within = bool(result.converged) and candidate.tolerance.holds(leaves, reference_leaves)
        measurements[candidate.name] = Measurement(
            candidate=candidate,
            result=result,
            timing=timing_from(times[candidate.name], warmup, repeats),
            bitwise_equal=equal,
            max_abs_diff=max_abs_diff(leaves, reference_leaves),
            within_tolerance=within,
            trace=trace,
            interleaved_with=tuple(n for n in names if n != candidate.name),
            session=session,
            calls_per_repeat=inner[candidate.name],
            calls_per_sample=group[candidate.name],
            calibration_s=calibration[candidate.name],
        )
        m = measurements[candidate.name]
        spread = (f"IQR {m.timing.iqr_s:.2g} s" if m.timing.iqr_s is not None
                  else f"range {m.timing.min_s:.4g}-{m.timing.max_s:.4g} s")
        log.info("%s: %d/%d iterations, %.3g network evaluations, converged=%s, bitwise=%s%s, "
                 "max |diff| %.3g, median %.4g s (%s)", candidate.name, result.iterations,
                 result.sequence_length, result.network_evaluations, result.converged, equal,
                 "" if within is None else f", within tolerance={within}", m.max_abs_diff,
                 m.timing.median_s, spread)
    return measurements


def record(measurement: Measurement, context: RunContext) -> dict:
    """The run record of DESIGN.md §6 (validated when written by :func:`write_runs`)."""
    m, spec, result = measurement, measurement.candidate.spec, measurement.result
    timing = {**m.timing.as_dict(), "interleaved_with": list(m.interleaved_with), "session": m.session,
              "calls_per_repeat": m.calls_per_repeat, "calls_per_sample": m.calls_per_sample,
              "calibration_s": m.calibration_s}
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
        "stopped_by": m.stopped_by,
        "bitwise_equal": m.bitwise_equal,
        "max_abs_diff": m.max_abs_diff,
        "tolerance": None if m.candidate.tolerance is None else m.candidate.tolerance.as_dict(),
        "within_tolerance": m.within_tolerance,
        "wall_time_s": m.timing.median_s,
        "timing": timing,
        "batch": int(context.batch),
        "device": context.device,
        "seed": int(context.seed),
        # The threads the job computed with (ffsolve.workflow.jobs set them before any work); a caller
        # outside a job that names none gets the count in force in this process.
        "threads": int(context.threads) if context.threads else threads_in_use(),
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
