"""``method: auto``: the method chosen by measurement, on the user's own device.

A user cannot tell in advance whether a parallel method pays: on a 2-core CPU DenseNet's Jacobi
runs far slower than the forward pass while MADE's Jacobi wins many times over. ``auto`` runs a
short *pilot* and then the fastest candidate **among those that meet the run's accuracy**.

The pieces:

* :func:`eligibility` (pure): may this candidate answer this run? An exact run (tol 0) accepts the
  native sequential paths, and every run that is exact by contract (no budget, no stopping
  tolerance, bitwise or within its declared :class:`~ffsolve.kit.harness.Tolerance`); a truncated
  budget (``jacobi_k10``) is never eligible, nor a run that stops at a tolerance. A run at tol > 0
  (``auto_t1e-04``) accepts in addition the candidates that stop at that same tolerance.
* :func:`choose` (pure): given each option's full time (predicted or measured; ``None`` when its
  pilot was raced out) and eligibility, the fastest eligible option and a reason in words. Ties go
  to the earlier option in the list, and the native sequential path is listed first, so a tie
  keeps the plain path.
* :func:`run_pilot`: the measurement. The **baseline** (the native sequential path: forward pass,
  loop, BPTT) is piloted first by a :class:`Pilot`: either a cheap slice extrapolated by a known
  factor (``k`` of ``T`` steps of a loop, scale ``T/k``: a loop's cost is linear in its steps) or,
  when the experiment gives none, the full program itself (scale 1; its result is then reused).
  That gives the predicted sequential time ``S``. Each parallel candidate is then **raced**: its
  own full program runs under a deadline, and is interrupted (``SIGALRM``) once it has run longer
  than ``min(best time so far, what is left of pilot_budget × S)``. A candidate that finishes is
  measured, not predicted, and its output is the answer if it wins, so the winner's run is not
  repeated. Candidates race fastest-known first (by the previous pilot's times), so the
  deadline is small early and a slow candidate that cannot be interrupted (a compiled loop) does
  not eat the budget of a fast one behind it; the first call's warm-up pilot, with no times yet,
  gives each candidate an equal share of the budget. The pilots of losing candidates together
  cost at most ``pilot_budget × S`` (plus the baseline slice), so ``auto`` costs at most that fraction of a sequential run more than the
  method it picks. The price: a parallel method faster than sequential by less than
  ``1 / pilot_budget`` may be raced out before it finishes (default 0.1: a parallel method is
  found when it wins by 10x or more); raise ``pilot_budget`` to search harder. An interrupt lands
  after the step in progress, so a method whose single step is long overshoots its deadline by
  up to one step.
* :func:`auto_candidate`: the harness :class:`~ffsolve.kit.harness.Candidate` of an ``auto``
  run. Its timed program runs the whole pilot and then (unless the pilot already produced it) the
  chosen program, so the pilot's cost is inside the reported ``wall_time_s``. **The choice is made
  once per process**, by the first call (the harness's warm-up call when there is one; it pilots
  twice and takes each option's faster time of the two, since interference only ever inflates a
  time), and kept:
  every call re-runs the pilot (its cost is real), and a later pilot that would choose otherwise
  is counted in ``disagreements`` but not followed, so every timed call computes the same thing
  (the harness checks that every timed output is identical). The record's ``auto`` field
  (:data:`AUTO_SCHEMA`) says what was chosen and why, every pilot's timings, and the pilot's cost
  as a fraction of the predicted sequential time.

Racing needs ``SIGALRM``, so it happens only in the main thread on a POSIX system (the case of
Snakemake's script jobs); elsewhere every pilot runs to completion and the record says
``raced: false``. An interrupt lands between Python bytecodes: a single long kernel (a compiled
JAX loop) finishes before the race is called.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from ffsolve.kit.harness import Candidate
from ffsolve.kit.runs import RunSpec, is_sequential_baseline, parse_run_name
from ffsolve.timing import synchronize

AUTO = "auto"
DEFAULT_PILOT_BUDGET = 0.1

_NUMBER_OR_NULL = {"type": ["number", "null"]}
AUTO_SCHEMA = {
    "type": "object",
    "required": ["chosen", "reason", "baseline", "pilot_budget", "raced", "pilots", "calls",
                 "disagreements", "predicted_sequential_s", "pilot_overhead_s", "pilot_fraction"],
    "additionalProperties": False,
    "properties": {
        "chosen": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
        "baseline": {"type": "string", "minLength": 1},
        "pilot_budget": {"type": "number", "exclusiveMinimum": 0},
        "raced": {"type": "boolean"},
        "calls": {"type": "integer", "minimum": 1},
        "disagreements": {"type": "array", "items": {"type": "string"}},
        "predicted_sequential_s": {"type": "number", "minimum": 0},
        "pilot_overhead_s": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
        "pilot_fraction": {"type": "number", "minimum": 0},
        "pilots": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["run", "eligible", "why", "pilot_s", "scale", "predicted_s", "finished"],
                "additionalProperties": False,
                "properties": {
                    "run": {"type": "string"},
                    "eligible": {"type": "boolean"},
                    "why": {"type": "string"},
                    "pilot_s": _NUMBER_OR_NULL,
                    "scale": {"type": "number", "exclusiveMinimum": 0},
                    "predicted_s": _NUMBER_OR_NULL,
                    "finished": {"type": "boolean"},
                },
            },
        },
    },
}
"""The ``auto`` field of an ``auto`` run's record (validated by :func:`validate_auto`).

``pilots`` lists the first call's (second) pilot: per candidate its
eligibility and why, the seconds its pilot ran (``null`` if never run), the scale from pilot to
full run, the predicted (or, scale 1 and finished, measured) full time, and whether it finished.
``pilot_overhead_s`` holds, per call, the seconds spent beyond the chosen run itself (the
baseline slice and every raced-out or losing pilot); ``pilot_fraction`` is their median over the
calls after the first (which pilots twice, and is the harness's warm-up) divided by
``predicted_sequential_s``.
"""


_VALIDATOR = None


def validate_auto(value: Any) -> None:
    """Check an ``auto`` field against :data:`AUTO_SCHEMA` (the message names the field)."""
    global _VALIDATOR
    if _VALIDATOR is None:  # built once: jsonschema.validate re-checks the schema on every call
        _VALIDATOR = jsonschema.Draft202012Validator(AUTO_SCHEMA)
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(value))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"auto record: field {where}: {error.message}")


# ------------------------------------------------------------------------------ the pure choice


def eligibility(spec: RunSpec, run_tol: float = 0.0, inexact: Iterable[str] = ()) -> tuple[bool, str]:
    """May the run ``spec`` answer an ``auto`` run at ``run_tol``? Returns (eligible, why).

    ``inexact`` names methods or runs that stop short of the exact answer in a way the run name
    does not show (rnn_backprop's ``jacobi_tol``, a relative tolerance): never eligible.
    """
    if spec.method in inexact or spec.name in inexact:
        return False, "declared inexact by the experiment (it stops short of the exact answer)"
    if is_sequential_baseline(spec.method):
        return True, "native sequential path"
    if spec.method == AUTO:
        return False, "auto does not choose itself"
    if spec.budget is not None:
        return False, f"truncated budget of {spec.budget} steps: not a solve to the run's accuracy"
    if spec.tol is None:
        return True, "exact by contract (bitwise, or within its declared tolerance)"
    if run_tol > 0 and math.isclose(spec.tol, run_tol, rel_tol=1e-12):
        return True, f"stops at the run's tolerance {run_tol:g}"
    return False, f"stops at tolerance {spec.tol:g}, the run asks for {run_tol:g}"


@dataclass(frozen=True)
class Option:
    """One candidate as :func:`choose` sees it: its full time in seconds (``None``: unknown,
    e.g. raced out), whether it may answer the run, and why."""

    run: str
    seconds: float | None
    eligible: bool
    why: str = ""


@dataclass(frozen=True)
class Choice:
    run: str
    seconds: float
    reason: str


def choose(options: Sequence[Option], baseline: str) -> Choice:
    """The fastest eligible option with a known time; ties go to the earlier option."""
    known = {o.run: o for o in options}
    if baseline not in known:
        raise ValueError(f"the baseline {baseline!r} is not among the options {list(known)}")
    base = known[baseline]
    if not base.eligible or base.seconds is None:
        raise ValueError(f"the baseline {baseline!r} must be eligible and have a time")
    best: Option | None = None
    for option in options:
        if option.eligible and option.seconds is not None and (best is None or option.seconds < best.seconds):
            best = option
    assert best is not None
    notes = []
    for option in options:
        if option.run == best.run:
            continue
        if not option.eligible:
            notes.append(f"{option.run} not eligible ({option.why})")
        elif option.seconds is None:
            notes.append(f"{option.run} raced out ({option.why})" if option.why else f"{option.run} raced out")
        else:
            notes.append(f"{option.run} {option.seconds:.4g} s")
    if best.run == baseline:
        head = f"{best.run}: the native sequential path, {best.seconds:.4g} s, is the fastest eligible"
    else:
        head = (f"{best.run}: {best.seconds:.4g} s, {base.seconds / best.seconds:.3g}x faster than "
                f"{baseline}'s {base.seconds:.4g} s")
    return Choice(best.run, float(best.seconds), head + ("; " + "; ".join(notes) if notes else ""))


# ------------------------------------------------------------------------------ the pilot


@dataclass(frozen=True)
class Pilot:
    """A cheap run that predicts one candidate's full time: ``scale × seconds(program())``.

    ``program`` returns what the candidate's program returns (a ``SolveResult``) on a reduced
    problem, e.g. the first ``k`` of ``T`` steps of a loop with ``scale = T / k``.
    """

    program: Callable[[], Any]
    scale: float
    what: str = ""

    def __post_init__(self):
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"a pilot's scale must be a positive finite number, got {self.scale!r}")


def loop_pilot(run_steps: Callable[[int], Any], steps: int, length: int, what: str = "") -> Pilot:
    """The first ``steps`` of a ``length``-step loop, extrapolated by ``length / steps``.

    ``run_steps(k)`` runs the loop's first ``k`` steps (e.g. ``ffsolve.solve(f, x0, "sequential",
    max_iters=k)``): each step of a sequential loop costs the same, so its full time is
    ``(T / k)`` times that of ``k`` steps.
    """
    steps = max(1, min(int(steps), int(length)))
    return Pilot(lambda: run_steps(steps), length / steps,
                 what or f"first {steps} of {length} steps, scaled by {length / steps:.4g}")


def pilot_steps(length: int, fraction: float = 0.05, minimum: int = 2) -> int:
    """How many steps a loop pilot takes: ``fraction`` of ``length``, at least ``minimum``."""
    return max(1, min(int(length), max(int(minimum), round(fraction * length))))


class _RaceLost(BaseException):
    """Raised by the alarm inside a raced program (a BaseException, so no ``except Exception``
    in the program swallows it)."""


def _can_race() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _raced(fn: Callable[[], Any], deadline_s: float, race: bool) -> tuple[Any, float, bool]:
    """Run ``fn`` (with its sync); stop it after ``deadline_s`` seconds when racing.

    Returns (result or None, seconds, finished).
    """
    if not race or deadline_s == math.inf:
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start, True
    if deadline_s <= 0:
        return None, 0.0, False

    def alarm(signum, frame):
        raise _RaceLost()

    previous = signal.signal(signal.SIGALRM, alarm)
    start = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, deadline_s)
        try:
            out = fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return out, time.perf_counter() - start, True
    except BaseException as err:
        if not _is_race_lost(err):
            raise
        return None, time.perf_counter() - start, False
    finally:
        signal.signal(signal.SIGALRM, previous)


def _is_race_lost(err: BaseException | None) -> bool:
    """Is ``err`` the alarm, or an error it caused? An alarm that lands inside a C function
    calling back into Python (NumPy's dtype lookup under ``jnp.zeros``, say) comes out as a
    ``SystemError`` whose cause is the alarm."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, _RaceLost):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


@dataclass
class PilotOutcome:
    """One call's pilot: the options it measured, the choice, and what it cost."""

    options: list[Option]
    choice: Choice
    records: list[dict]
    results: dict[str, Any]
    predicted_sequential_s: float
    spent_s: float
    raced: bool


def run_pilot(candidates: Sequence[Candidate], baseline: str, *, baseline_pilot: Pilot | None = None,
              run_tol: float = 0.0, pilot_budget: float = DEFAULT_PILOT_BUDGET,
              output: Callable[[Any], Any] = lambda result: result.x,
              sync: Callable[[Any], Any] = synchronize, race: bool | None = None,
              converged: Callable[[Any], bool] = lambda result: bool(getattr(result, "converged", True)),
              inexact: Iterable[str] = (), known: dict[str, float] | None = None,
              share_unknown: bool = False) -> PilotOutcome:
    """Pilot the baseline, then race every eligible candidate; returns what was found.

    ``known`` (seconds by run, from an earlier pilot) orders the race: the fastest known first,
    so the best time so far is small early and slower candidates are cut early. Candidates with
    no known time follow (parallel methods before other sequential-type paths, else in their
    given order). With ``share_unknown`` each of those gets an equal share of what is left of
    the budget (so that one slow candidate that cannot be interrupted does not leave the others
    unpiloted); without, each may use all that is left (so that a method that wins by less than
    budget × number of candidates is still found).

    ``results`` holds the outputs of the candidates whose full program ran to the end (reusable:
    the same program gives the same output).
    """
    if not pilot_budget > 0:
        raise ValueError(f"auto's pilot_budget must be > 0 (a fraction of one sequential run), got {pilot_budget!r}")
    race = _can_race() if race is None else bool(race)
    by_name = {c.name: c for c in candidates}
    if baseline not in by_name:
        raise ValueError(f"auto needs the native sequential path {baseline!r} among the candidates {list(by_name)}")
    start = time.perf_counter()
    records, options, results = [], [], {}

    def timed(program):
        def go():
            out = program()
            sync(output(out))
            return out
        return go

    # 1. The baseline: its pilot (a slice, scaled) or its full program.
    base = by_name[baseline]
    pilot = baseline_pilot or Pilot(base.program, 1.0, "the full program")
    out, seconds, _ = _raced(timed(pilot.program), math.inf, False)
    predicted_s = pilot.scale * seconds
    if baseline_pilot is None:
        results[baseline] = out
    options.append(Option(baseline, predicted_s, True, "native sequential path"))
    records.append({"run": baseline, "eligible": True, "why": f"native sequential path; pilot: {pilot.what}",
                    "pilot_s": seconds, "scale": pilot.scale, "predicted_s": predicted_s, "finished": True})

    # 2. The others, raced: each may run until the best time so far, and the losers together
    # (every raced candidate but the current best) may spend at most pilot_budget × S.
    allowance = pilot_budget * predicted_s
    best_name, best_s, losers_s = baseline, predicted_s, 0.0
    known = known or {}
    # Known times first, fastest first; then the unknown: parallel methods before other
    # sequential-type paths (a cached loop often cannot be interrupted, and would eat the budget).
    ranked = sorted(candidates, key=lambda c: (known.get(c.name, math.inf),
                                               is_sequential_baseline(c.spec.method)))
    unknown = sum(1 for c in candidates if c.name != baseline and c.name not in known
                  and eligibility(c.spec, run_tol, inexact)[0])
    for candidate in ranked:
        name = candidate.name
        if name == baseline:
            continue
        eligible, why = eligibility(candidate.spec, run_tol, inexact)
        if not eligible:
            options.append(Option(name, None, False, why))
            records.append({"run": name, "eligible": False, "why": why, "pilot_s": None, "scale": 1.0,
                            "predicted_s": None, "finished": False})
            continue
        left = allowance - losers_s
        if share_unknown and name not in known:  # no time yet: an equal share of what is left
            left, unknown = left / max(unknown, 1), unknown - 1
        deadline = max(0.0, min(best_s, left))
        out, seconds, finished = _raced(timed(candidate.program), deadline, race)
        if finished and not converged(out):
            eligible, why = False, "did not converge: its output is not the solve's answer"
        if finished and eligible:
            results[name] = out
            options.append(Option(name, seconds, True, why))
            if seconds < best_s:
                if best_name != baseline:
                    losers_s += best_s
                best_name, best_s = name, seconds
            else:
                losers_s += seconds
        else:
            losers_s += seconds
            if not finished and deadline <= 0:
                why = "not piloted: the pilot budget was spent"
            elif not finished:
                why = (f"not done within {deadline:.4g} s (the best time so far, or what was left of "
                       "the pilot budget; an interrupt lands after the step in progress)")
            options.append(Option(name, None, eligible, why))
        records.append({"run": name, "eligible": eligible, "why": why, "pilot_s": seconds, "scale": 1.0,
                        "predicted_s": seconds if finished else None, "finished": finished})
    choice = choose(options, baseline)
    return PilotOutcome(options, choice, records, results, predicted_s, time.perf_counter() - start, race)


def combine(a: PilotOutcome, b: PilotOutcome, baseline: str) -> Choice:
    """The choice from two pilots: each option at the faster of its two times (a time is only
    ever inflated by interference, never deflated), eligible only if eligible in both."""
    other = {o.run: o for o in a.options}
    merged = []
    for option in b.options:
        first = other.get(option.run, option)
        times = [t for t in (first.seconds, option.seconds) if t is not None]
        merged.append(Option(option.run, min(times) if times else None,
                             option.eligible and first.eligible, option.why))
    return choose(merged, baseline)


# ------------------------------------------------------------------------------ the candidate


@dataclass
class AutoState:
    """What an ``auto`` candidate remembers between calls (the choice is the first call's)."""

    chosen: str | None = None
    choice: Choice | None = None
    known: dict = field(default_factory=dict)
    predicted_s: float = 0.0
    first: PilotOutcome | None = None
    calls: int = 0
    disagreements: list[str] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)


def auto_candidate(candidates: Sequence[Candidate], *, run: RunSpec | str = AUTO, baseline: str = "sequential",
                   baseline_pilot: Pilot | None = None, pilot_budget: float = DEFAULT_PILOT_BUDGET,
                   output: Callable[[Any], Any] = lambda result: result.x,
                   sync: Callable[[Any], Any] = synchronize, race: bool | None = None,
                   extra: dict | None = None, inexact: Iterable[str] = (),
                   warm_first: bool = True) -> Candidate:
    """The harness candidate of an ``auto`` run over ``candidates`` (see the module docstring).

    ``warm_first=False`` skips the first call's warm-up pilot, for callers that have warmed every
    candidate already (and time the first call). ``inexact``: see :func:`eligibility`.
    Candidates whose ``extra`` names another ``quantity`` than the baseline's (a run that times
    something else, e.g. ``time_to_top5`` beside one solve) are left out; ``auto`` inherits the
    baseline's quantity with the chosen run's other fields. The returned candidate's ``extra["auto"]`` is filled in by its calls, it
    takes the chosen candidate's other ``extra`` fields, and its ``tolerance`` becomes the chosen
    candidate's (``None`` when the chosen one is exact by contract), so the
    harness judges the ``auto`` output as it would judge the chosen run's.
    """
    spec = run if isinstance(run, RunSpec) else parse_run_name(run)
    if spec.method != AUTO:
        raise ValueError(f"an auto run's method must be {AUTO!r}, got {spec.name!r}")
    # Runs that time another quantity than the baseline (a record's "quantity": training steps,
    # time to a stable top-5; none = one solve) do not answer the run, whatever their speed.
    quantities = {c.name: c.extra.get("quantity") for c in candidates}
    if baseline not in quantities:
        raise ValueError(f"auto needs the native sequential path {baseline!r} among the candidates "
                         f"{list(quantities)}")
    pool = [c for c in candidates if c.spec.method != AUTO and quantities[c.name] == quantities[baseline]]
    by_name = {c.name: c for c in pool}
    state = AutoState()
    candidate = Candidate(spec, lambda: None, extra=dict(extra or {}))

    def pilot(known=None, share=False):
        return run_pilot(pool, baseline, baseline_pilot=baseline_pilot, run_tol=spec.stopping_tol(),
                         pilot_budget=pilot_budget, output=output, sync=sync, race=race,
                         inexact=inexact, known=known if known is not None else state.known,
                         share_unknown=share)

    def program():
        start = time.perf_counter()
        warm = None
        if state.chosen is None and warm_first:
            # The first call pilots twice and decides on each option's faster time of the two: a
            # first call pays for lazy imports, allocation and JIT compilation, and a shared
            # machine for its neighbours, which a slice scaled by T/k would multiply. Both pilots
            # are in this call's time (the harness's untimed warm-up call when there is one).
            warm = pilot(share=True)  # every candidate gets a slice: first times for the order
        # Race the fastest known first (the warm pilot's times, later the deciding ones).
        outcome = pilot(None if warm is None else
                        {o.run: o.seconds for o in warm.options if o.seconds is not None})
        state.calls += 1
        if state.chosen is None:
            state.choice = outcome.choice if warm is None else combine(warm, outcome, baseline)
            state.chosen, state.first = state.choice.run, outcome
            state.known = {o.run: o.seconds for o in (warm or outcome).options if o.seconds is not None}
            for o in outcome.options:
                if o.seconds is not None:
                    state.known[o.run] = min(o.seconds, state.known.get(o.run, math.inf))
            state.predicted_s = outcome.predicted_sequential_s if warm is None else min(
                warm.predicted_sequential_s, outcome.predicted_sequential_s)
            candidate.tolerance = by_name[state.chosen].tolerance
            # The chosen run's experiment fields (model size, checkpoint, ...) describe auto's too.
            for key, value in by_name[state.chosen].extra.items():
                candidate.extra.setdefault(key, value)
        elif outcome.choice.run != state.chosen:
            state.disagreements.append(
                f"call {state.calls}: the pilot would choose {outcome.choice.run}; kept {state.chosen}")
        chosen = by_name[state.chosen]
        if state.chosen in outcome.results:  # its pilot was its full program: reuse the output
            result = outcome.results[state.chosen]
            chosen_s = next(r["pilot_s"] for r in outcome.records if r["run"] == state.chosen)
        else:
            begin = time.perf_counter()
            result = chosen.program()
            sync(output(result))
            chosen_s = time.perf_counter() - begin
        total = time.perf_counter() - start
        state.overheads.append(max(0.0, total - chosen_s))
        # Plain bookkeeping inside the timed call; validated on the first call (the warm-up).
        candidate.extra["auto"] = auto_record(state, baseline, pilot_budget, validate=state.calls == 1)
        return result

    def traced():
        # The chosen run's traced twin: the same computation as the chosen program (the harness
        # checks it against auto's first timed output), so auto's trace is the chosen run's.
        if state.chosen is None:
            program()
        chosen = by_name[state.chosen]
        if chosen.traced is None:
            return program(), {}
        return chosen.traced()

    candidate.program = program
    candidate.traced = traced if any(c.traced is not None for c in pool) else None
    return candidate


def auto_record(state: AutoState, baseline: str, pilot_budget: float, validate: bool = True) -> dict:
    first = state.first
    # The first call pilots twice and warms everything up (the harness's untimed warm-up call):
    # the fraction is taken over the later calls when there are any.
    overheads = sorted(state.overheads[1:] or state.overheads)
    median = overheads[len(overheads) // 2] if len(overheads) % 2 else \
        0.5 * (overheads[len(overheads) // 2 - 1] + overheads[len(overheads) // 2])
    value = {
        "chosen": state.chosen,
        "reason": state.choice.reason,
        "baseline": baseline,
        "pilot_budget": float(pilot_budget),
        "raced": first.raced,
        "pilots": first.records,
        "calls": state.calls,
        "disagreements": list(state.disagreements),
        "predicted_sequential_s": state.predicted_s,
        "pilot_overhead_s": list(state.overheads),
        "pilot_fraction": median / state.predicted_s if state.predicted_s > 0 else 0.0,
    }
    if validate:
        validate_auto(value)
    return value


# ------------------------------------------------------------------------------ wiring helpers


def split_auto(specs: Sequence[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
    """The configured runs without ``auto`` (built by the experiment), and the ``auto`` runs."""
    return [s for s in specs if s.method != AUTO], [s for s in specs if s.method == AUTO]


def add_auto(candidates: list[Candidate], auto_runs: Sequence[RunSpec], **kwargs) -> list[Candidate]:
    """``candidates`` plus one :func:`auto_candidate` per ``auto`` run (each over ``candidates``)."""
    return list(candidates) + [auto_candidate(candidates, run=spec, **kwargs) for spec in auto_runs]
