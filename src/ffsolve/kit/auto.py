"""``method: auto``: the experiments' autotuner, the same one users get from ``ffsolve.solve(...,
method="auto")`` (:mod:`ffsolve.autotune`), over an experiment's own candidates.

A user cannot tell in advance whether a parallel method pays: on a 2-core CPU DenseNet's Jacobi
runs far slower than the forward pass while MADE's Jacobi wins many times over. ``auto`` measures
once and keeps the winner, as cuDNN's benchmark mode and Triton's ``autotune`` do:

* **Pilot once, keep the winner.** The first call (the harness's untimed warm-up call, or
  :attr:`~ffsolve.kit.harness.Candidate.prepare` when there is no warm-up round) times the
  candidates and decides; every later call runs the chosen program alone, so the steady-state
  time (the record's ``wall_time_s``) is the chosen run's. The first call's result is the winner's
  own pilot output (its full program ran), so nothing is run twice. The record's ``auto`` field
  (:data:`AUTO_SCHEMA`) gives the first call's time, pilot included (``first_call_s``), and its
  work (``first_call_network_evaluations``: every program it ran) apart from the steady state.
* **Cooperative deadlines, no signals.** A candidate's program may take a ``deadline`` keyword
  (``ffsolve.solve`` and ``ffsolve.solve_recurrence`` take one, and the experiments thread it
  through their programs and loops): the pilot passes an :class:`ffsolve.Deadline`, a hard stop at
  the best time so far / (1 + :data:`ffsolve.deadline.TIE`) (a run that cannot beat the best by
  more than the tie would not change the choice) and a projection that stops a run going to lose by more than
  :data:`ffsolve.deadline.MARGIN` × that time once it has been watched for a tenth of it (its
  progress: the settled prefix, or the fall of its change; :mod:`ffsolve.deadline`). The program
  stops after the step in progress (``stopped_by="deadline"``) and loses. So any win is found
  unless a run's progress comes late and all at once, a loser by more than the margin may cost as
  little as a tenth of the best time, and one within it the best time.
  Programs that take no deadline run to completion. Nothing is interrupted from outside: it works
  in any thread, on any OS, and leaves the caller's timers and signal handlers alone.
* **A cheap prediction orders the candidates**: with a :class:`Pilot` of the baseline (the native
  sequential path: a loop's first k and k/2 of T steps, k = 2 % of T by default: a call's fixed
  cost plus T times a step's) the parallel candidates run first,
  each with the deadline ``min(best time so far, SLACK × the predicted baseline time) / (1 +
  TIE)``, and the baseline runs last as the fallback, cut the same way (not at all when its
  prediction is over ``SLACK ×`` the best time / (1 + TIE)); without one, the baseline runs first in full and its time is
  every later candidate's deadline.
* **Exact means bitwise** (:func:`eligibility`, :func:`verdict`): an exact ``auto`` run (tol 0) is
  answered only by a run whose output is the reference's (``sequential``'s) bit for bit, checked on
  the pilot's own output. A run that is only within a declared tolerance (a cached sampler, a scan,
  a batched step) answers only when the caller allows it (``allow_within_tolerance``; the
  workflow's ``timing.auto_allow_within_tolerance``), and then only within that tolerance. The
  reference's output comes from the harness's own call of it (the reference candidate's program
  is wrapped to keep its last complete output), or the pilot runs it first, in full.
* **Decisions kept** per key (the experiment's problem: dataset, shapes, batch, dtype, device;
  the run and its tolerance, the candidate set, the baseline and reference, whether
  within-tolerance answers are allowed, the compute threads and ``ffsolve.__version__``) through
  :func:`ffsolve.autotune.store` and :func:`ffsolve.autotune.lookup`: in memory, and in a
  decisions file when one is given (the workflow: ``results/autotune/<experiment>/<dataset>.json``,
  one per measure job). A key with a decision pilots nothing; ``replay`` never pilots, and a key
  without a decision is then an error that names it.

:func:`choose` is the pure choice (the fastest option that may answer, with its reason);
:func:`run_pilot` the measurement; :func:`auto_candidate` the harness candidate.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from ffsolve.deadline import MARGIN, TIE, Deadline
from ffsolve.kit.harness import Candidate, bitwise_equal, max_abs_diff, to_numpy_leaves
from ffsolve.kit.runs import RunSpec, is_sequential_baseline, parse_run_name
from ffsolve.timing import synchronize

AUTO = "auto"
SLACK = 1.25
"""Candidates tried before the baseline may run this multiple of its predicted time (the slice's
extrapolation may be off by that much), until a candidate finishes and its time is the deadline."""

_NUMBER_OR_NULL = {"type": ["number", "null"], "minimum": 0}
PILOT_SCHEMA = {
    "type": "object",
    "required": ["run", "eligible", "why", "accepts_deadline", "deadline_s", "seconds", "finished",
                 "network_evaluations"],
    "additionalProperties": False,
    "properties": {
        "run": {"type": "string", "minLength": 1},
        "eligible": {"type": "boolean"},
        "why": {"type": "string"},
        "accepts_deadline": {"type": "boolean"},
        "deadline_s": _NUMBER_OR_NULL,
        "seconds": _NUMBER_OR_NULL,
        "finished": {"type": "boolean"},
        "network_evaluations": _NUMBER_OR_NULL,
    },
}
AUTO_SCHEMA = {
    "type": "object",
    "required": ["chosen", "reason", "baseline", "reference", "run_tol", "decided_by", "replay",
                 "allow_within_tolerance", "key", "decisions_file", "first_call_s",
                 "first_call_network_evaluations", "pilot_s", "predicted_baseline_s", "pilots",
                 "calls"],
    "additionalProperties": False,
    "properties": {
        "chosen": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
        "baseline": {"type": "string", "minLength": 1},
        "reference": {"type": "string", "minLength": 1},
        "run_tol": {"type": "number", "minimum": 0},
        "decided_by": {"enum": ["pilot", "stored"]},
        "replay": {"type": "boolean"},
        "allow_within_tolerance": {"type": "boolean"},
        "key": {"type": ["object", "null"]},
        "decisions_file": {"type": ["string", "null"]},
        "first_call_s": {"type": "number", "minimum": 0},
        "first_call_network_evaluations": {"type": "number", "minimum": 0},
        "pilot_s": {"type": "number", "minimum": 0},
        "predicted_baseline_s": _NUMBER_OR_NULL,
        "pilots": {"type": "array", "items": PILOT_SCHEMA},
        "calls": {"type": "integer", "minimum": 1},
    },
}
"""The ``auto`` field of an ``auto`` run's record (validated by :func:`validate_auto`).

``chosen`` and ``reason``: the run that answers and why. ``decided_by``: ``pilot`` (this process
timed the candidates) or ``stored`` (a decision kept for the same ``key``, from memory or the
``decisions_file``; ``replay``: nothing may be piloted). ``first_call_s``: the wall time of this
process's first call, pilot included (the record's ``wall_time_s`` is the steady state: the
chosen program alone); ``first_call_network_evaluations``: the work of every program the first
call ran (the baseline slice, every candidate's pilot, in full passes); ``pilot_s``: the first
call's time beyond the chosen run's own. ``predicted_baseline_s``: the baseline slice's
extrapolation (``null`` without one). ``pilots``, in the order tried (then the candidates never
run): whether each may answer and why, whether its program takes a deadline, the deadline it was
given (seconds from its start; ``null``: none), the seconds it ran (``null``: not run), whether
it finished (not stopped by its deadline) and its work. ``calls``: calls of the ``auto``
program in this process.
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


# ------------------------------------------------------------------------------ who may answer


ALLOW_KEY = "timing.auto_allow_within_tolerance"


def eligibility(spec: RunSpec, run_tol: float = 0.0, inexact: Iterable[str] = (), *,
                tolerance: Any = None, allow_within_tolerance: bool = False) -> tuple[bool, str]:
    """May the run ``spec`` answer an ``auto`` run at ``run_tol``, before it ran? Returns
    (eligible, why). At tol 0 the answer is only provisional: :func:`verdict` checks the output.

    ``tolerance``: the run's declared tolerance (``Candidate.tolerance``; ``None``: it must be
    bitwise). A run with one answers an exact ``auto`` run only when ``allow_within_tolerance``.
    ``inexact`` names methods or runs that stop short of the exact answer in a way the run name
    does not show (rnn_backprop's ``jacobi_tol``, a relative tolerance): never eligible.
    """
    if spec.method in inexact or spec.name in inexact:
        return False, "declared inexact by the experiment (it stops short of the exact answer)"
    if spec.method == AUTO:
        return False, "auto does not choose itself"
    if spec.budget is not None:
        return False, f"truncated budget of {spec.budget} steps: not a solve to the run's accuracy"
    if spec.tol is not None:
        if run_tol > 0 and math.isclose(spec.tol, run_tol, rel_tol=1e-12):
            return True, f"stops at the run's tolerance {run_tol:g}"
        return False, f"stops at tolerance {spec.tol:g}, the run asks for {run_tol:g}"
    sequential = is_sequential_baseline(spec.method)
    what = "native sequential path" if sequential else "exact by contract"
    if tolerance is None:
        return True, what + ("; must give the reference's bits" if run_tol == 0 else "")
    if run_tol == 0 and not allow_within_tolerance:
        return False, (f"{what}, but only within its declared tolerance, never bitwise: an exact "
                       f"auto run is answered only by bitwise runs ({ALLOW_KEY}: true admits it)")
    return True, what + ("; within its declared tolerance (allowed)" if run_tol == 0 else "")


def verdict(candidate: Candidate, result: Any, reference: Sequence | None, run_tol: float,
            allow_within_tolerance: bool = False,
            output: Callable[[Any], Any] = lambda result: result.x) -> tuple[bool, str]:
    """May ``result``, the finished output of ``candidate``'s program, answer the run? At tol 0 it
    must be the reference's bits (``reference``: its output as NumPy leaves), or, where allowed,
    within the candidate's declared tolerance; it must have converged."""
    if not bool(getattr(result, "converged", True)):
        stop = getattr(result, "stopped_by", None) or "its budget"
        return False, f"did not converge (stopped by {stop}): not the run's answer"
    if run_tol > 0:
        return True, f"converged (the run asks for tolerance {run_tol:g})"
    if reference is None:
        raise ValueError("an exact auto run needs the reference's output to check an answer")
    leaves = to_numpy_leaves(output(result))
    if bitwise_equal(leaves, reference):
        return True, "bitwise the reference's output"
    diff = max_abs_diff(leaves, reference) if len(leaves) == len(reference) else math.inf
    if candidate.tolerance is not None and allow_within_tolerance:
        if candidate.tolerance.holds(leaves, reference):
            return True, f"within its declared tolerance (max |diff| {diff:.3g}; allowed)"
        return False, f"outside its declared tolerance (max |diff| {diff:.3g})"
    return False, (f"not the reference's bits (max |diff| {diff:.3g}): an exact auto run is "
                   "answered only by bitwise runs")


# ------------------------------------------------------------------------------ the pure choice


@dataclass(frozen=True)
class Option:
    """One candidate as :func:`choose` sees it: its full time in seconds (``None``: unknown,
    e.g. stopped by its deadline, or not run), whether it may answer the run, and why."""

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
    """The fastest eligible option with a known time; ties go to the earlier option. The reason
    compares it with the ``baseline`` (the native sequential path) where that has a time."""
    known = {o.run: o for o in options}
    if baseline not in known:
        raise ValueError(f"the baseline {baseline!r} is not among the options {list(known)}")
    best: Option | None = None
    for option in options:
        if option.eligible and option.seconds is not None and (best is None or option.seconds < best.seconds):
            best = option
    if best is None:
        raise ValueError("no option may answer the run with a known time: "
                         + "; ".join(f"{o.run}: {o.why}" for o in options))
    base = known[baseline]
    notes = []
    for option in options:
        if option.run == best.run:
            continue
        if not option.eligible:
            notes.append(f"{option.run} not eligible ({option.why})")
        elif option.seconds is None and option.why.startswith("not run"):
            notes.append(f"{option.run} {option.why}")
        elif option.seconds is None:
            notes.append(f"{option.run} stopped at its deadline" + (f" ({option.why})" if option.why else ""))
        else:
            notes.append(f"{option.run} {option.seconds:.4g} s")
    if best.run == baseline:
        head = f"{best.run}: the native sequential path, {best.seconds:.4g} s, is the fastest eligible"
    elif base.seconds is not None:
        head = (f"{best.run}: {best.seconds:.4g} s, {base.seconds / best.seconds:.3g}x faster than "
                f"{baseline}'s {base.seconds:.4g} s")
    else:
        head = f"{best.run}: {best.seconds:.4g} s, the fastest eligible"
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
    half: Callable[[], Any] | None = None
    """The same reduced problem at half the size (a loop's first k/2 steps): with it the
    prediction separates a call's fixed cost o from the per-step cost c (t_k = o + k c), which
    ``scale ×`` would multiply with the steps (it overestimated a 1,000-step GRU loop by 21 %)."""

    def __post_init__(self):
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"a pilot's scale must be a positive finite number, got {self.scale!r}")

    def predict(self, timed: Callable[[Callable[[], Any]], tuple[float, Any]]) -> tuple[float, list]:
        """(the predicted seconds, the outputs it ran); ``timed(program)`` -> (seconds, output)."""
        # The full slice first: a first call's start-up cost then lands in it, and inflates the
        # per-step cost (a prediction that errs high runs the baseline), not the fixed one.
        full, out = timed(self.program)
        outs = [out]
        short = None
        if self.half is not None:
            short, out = timed(self.half)
            outs.append(out)
        if short is None or not full > short:
            return self.scale * full, outs
        per_step_times_k = 2.0 * (full - short)  # k c
        fixed = max(0.0, full - per_step_times_k)  # o
        return max(full, fixed + self.scale * per_step_times_k), outs


def loop_pilot(run_steps: Callable[[int], Any], steps: int, length: int, what: str = "") -> Pilot:
    """The first ``steps`` of a ``length``-step loop, extrapolated to ``length`` steps.

    ``run_steps(k)`` runs the loop's first ``k`` steps (e.g. ``ffsolve.solve(f, x0, "sequential",
    max_iters=k)``): each step of a sequential loop costs the same, so its full time is a call's
    fixed cost plus T times a step's, both read from ``steps / 2`` and ``steps`` steps (an odd
    ``steps``: ``(T / k)`` times that of ``k`` steps).
    """
    steps = max(1, min(int(steps), int(length)))
    half = steps // 2 if steps >= 2 and steps % 2 == 0 else None
    return Pilot(lambda: run_steps(steps), length / steps,
                 what or (f"first {steps // 2} and {steps} of {length} steps: a call's fixed cost "
                          f"plus {length} x the per-step cost" if half else
                          f"first {steps} of {length} steps, scaled by {length / steps:.4g}"),
                 half=(lambda: run_steps(half)) if half else None)


def pilot_steps(length: int, fraction: float = 0.02, minimum: int = 2) -> int:
    """How many steps a loop pilot takes: ``fraction`` of ``length``, at least ``minimum`` (the
    slice is part of the first call's cost; it only bounds the candidates tried before any
    finished, with :data:`SLACK` to spare)."""
    steps = max(1, min(int(length), max(int(minimum), round(fraction * length))))
    return steps + 1 if steps % 2 and steps < length else steps  # even: its half is a second point


def accepts_deadline(program: Callable) -> bool:
    """Whether ``program`` takes a ``deadline`` keyword (a named parameter; ``**kwargs`` does not
    count: it may not honour one)."""
    try:
        parameters = inspect.signature(program).parameters
    except (TypeError, ValueError):
        return False
    found = parameters.get("deadline")
    return found is not None and found.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                inspect.Parameter.KEYWORD_ONLY)


def stopped_by_deadline(result: Any) -> bool:
    return getattr(result, "stopped_by", None) == "deadline"


def _work(result: Any) -> float:
    value = getattr(result, "network_evaluations", None)
    return float(value) if value is not None else 0.0


@dataclass
class PilotOutcome:
    """One pilot: the choice, the chosen run's output (its full program ran), every candidate's
    record, the baseline's predicted time, the seconds and the work it took."""

    choice: Choice
    result: Any
    records: list[dict]
    predicted_baseline_s: float | None
    spent_s: float
    work: float


def _order(pool: Sequence[Candidate], baseline: str, statics: Mapping[str, tuple[bool, str]],
           sliced: bool, first: str | None) -> list[Candidate]:
    """The order the candidates are tried: ``first`` (the reference when its output is needed),
    the baseline when it has no slice (its full time is the first deadline), the parallel
    candidates, other sequential-type paths, then the baseline when its slice predicted it (the
    fallback, cut by the best time)."""
    def rank(item):
        index, c = item
        if c.name == first:
            return (0, index)
        if c.name == baseline and statics[baseline][0]:
            return (4 if sliced else 1, index)
        return (3 if is_sequential_baseline(c.spec.method) else 2, index)

    return [c for _, c in sorted(enumerate(pool), key=rank)]


def run_pilot(candidates: Sequence[Candidate], baseline: str, *, reference: str = "sequential",
              baseline_pilot: Pilot | None = None, run_tol: float = 0.0,
              inexact: Iterable[str] = (), allow_within_tolerance: bool = False,
              reference_result: Any = None, output: Callable[[Any], Any] = lambda result: result.x,
              sync: Callable[[Any], Any] = synchronize) -> PilotOutcome:
    """Time the candidates under cooperative deadlines and choose (see the module docstring).

    ``reference_result``: the reference's complete output when the caller has it; else, at tol
    0, the reference runs first, in full (every answer is checked against its bits). Each
    candidate's deadline is an :class:`ffsolve.Deadline` (a hard stop at a ``time.perf_counter()``
    value and a projection).
    """
    clock = time.perf_counter
    by_name = {c.name: c for c in candidates}
    for role, name in (("native sequential path", baseline), ("reference", reference)):
        if name not in by_name:
            raise ValueError(f"auto needs the {role} {name!r} among the candidates {list(by_name)}")
    inexact = tuple(inexact)
    statics = {c.name: eligibility(c.spec, run_tol, inexact, tolerance=c.tolerance,
                                   allow_within_tolerance=allow_within_tolerance) for c in candidates}
    if not statics[reference][0]:
        raise ValueError(f"the reference {reference!r} cannot answer the run: {statics[reference][1]}")
    start = clock()
    work = 0.0
    ref_leaves = None if reference_result is None else to_numpy_leaves(output(reference_result))
    first = reference if run_tol == 0 and ref_leaves is None else None
    predicted = bound = None
    # The slice predicts the baseline; pointless when the baseline runs first in full anyway, or
    # cannot answer (its time then bounds nothing).
    if baseline_pilot is not None and first != baseline and statics[baseline][0]:
        def timed(program):
            begin = clock()
            out = program()
            sync(output(out))
            return clock() - begin, out

        predicted, outs = baseline_pilot.predict(timed)
        work += sum(_work(out) for out in outs)
        bound = SLACK * predicted / (1 + TIE)  # must beat it by more than the tie
    sliced = predicted is not None
    records: list[dict] = []
    results: dict[str, Any] = {}
    best_s = None

    def attempt(candidate: Candidate, limit: float | None) -> None:
        nonlocal work, best_s, ref_leaves
        name = candidate.name
        accepts = accepts_deadline(candidate.program)
        why = statics[name][1]
        record = {"run": name, "eligible": True, "why": why, "accepts_deadline": accepts,
                  "deadline_s": limit if accepts else None, "seconds": None, "finished": False,
                  "network_evaluations": None}
        records.append(record)
        begin = clock()
        if accepts and limit is not None:
            # The hard stop is the limit; the projection may stop a run that is going to lose.
            out = candidate.program(deadline=Deadline(at=begin + limit, beat=limit, start=begin))
        else:
            out = candidate.program()
        sync(output(out))
        seconds = clock() - begin
        work += _work(out)
        record.update(seconds=seconds, network_evaluations=_work(out))
        if stopped_by_deadline(out):
            what = (f"the best time so far / {1 + TIE:g}" if best_s is not None
                    else f"{SLACK:g} x the predicted {baseline} / {1 + TIE:g}")
            if seconds < limit:
                record["why"] = (f"{why}; stopped after {seconds:.4g} s: its progress projected "
                                 f"it at over {MARGIN:g} x its deadline of {limit:.4g} s ({what})")
            else:
                record["why"] = f"{why}; stopped at its deadline of {limit:.4g} s ({what})"
            return
        record["finished"] = True
        if name == reference and ref_leaves is None and run_tol == 0 and bool(getattr(out, "converged", True)):
            ref_leaves = to_numpy_leaves(output(out))
        ok, said = verdict(candidate, out, ref_leaves, run_tol, allow_within_tolerance, output)
        record.update(eligible=ok, why=f"{why}; {said}")
        if ok:
            results[name] = out
            if best_s is None or seconds < best_s:
                best_s = seconds

    for candidate in _order(candidates, baseline, statics, sliced, first):
        name = candidate.name
        if not statics[name][0]:
            continue
        if name == baseline and sliced and best_s is not None and predicted > SLACK * best_s / (1 + TIE):
            # Its slice says it does not beat the best by more than the tie, even if the slice is
            # off by SLACK: not worth its deadline.
            records.append({"run": name, "eligible": True, "accepts_deadline": accepts_deadline(candidate.program),
                            "why": (f"not run: its slice predicts {predicted:.4g} s, over {SLACK:g} x the "
                                    f"best time {best_s:.4g} s / {1 + TIE:g}"), "deadline_s": None,
                            "seconds": None, "finished": False, "network_evaluations": None})
            continue
        if name == first or (name == baseline and best_s is None):
            limit = None  # the reference's bits are needed; the fallback runs to the end
        else:
            limit = best_s / (1 + TIE) if best_s is not None else bound
        attempt(candidate, limit)
    if best_s is None:  # every candidate was cut by the prediction: the reference to the end
        attempt(by_name[reference], None)
    for candidate in candidates:
        if not statics[candidate.name][0]:
            records.append({"run": candidate.name, "eligible": False, "why": statics[candidate.name][1],
                            "accepts_deadline": accepts_deadline(candidate.program), "deadline_s": None,
                            "seconds": None, "finished": False, "network_evaluations": None})
    last = {r["run"]: r for r in records}  # a candidate tried twice: its last attempt
    options = [Option(c.name, last[c.name]["seconds"] if last[c.name]["finished"] and last[c.name]["eligible"]
                      else None, last[c.name]["eligible"], last[c.name]["why"]) for c in candidates]
    choice = choose(options, baseline)
    return PilotOutcome(choice, results[choice.run], records, predicted, clock() - start, work)


# ------------------------------------------------------------------------------ the candidate


@dataclass
class AutoState:
    """What an ``auto`` candidate remembers between calls (decided by the first)."""

    chosen: str | None = None
    reason: str = ""
    decided_by: str = "pilot"
    first_call_s: float = 0.0
    first_call_work: float = 0.0
    pilot_s: float = 0.0
    predicted_s: float | None = None
    pilots: list = field(default_factory=list)
    calls: int = 0
    reference_result: Any = None


def problem_key(**parts: Any) -> dict:
    """A key's problem part, as JSON-ready values (shapes as lists, dtypes and devices as text)."""
    def plain(value):
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):  # torch.Size too
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
        return str(value)
    return plain(parts)


def auto_candidate(candidates: Sequence[Candidate], *, run: RunSpec | str = AUTO, baseline: str = "sequential",
                   reference: str = "sequential", baseline_pilot: Pilot | None = None,
                   output: Callable[[Any], Any] = lambda result: result.x,
                   sync: Callable[[Any], Any] = synchronize, extra: dict | None = None,
                   inexact: Iterable[str] = (), allow_within_tolerance: bool = False,
                   key: Mapping[str, Any] | None = None, decisions: str | None = None,
                   replay: bool = False) -> Candidate:
    """The harness candidate of an ``auto`` run over ``candidates`` (see the module docstring).

    ``baseline``: the native sequential path (piloted by ``baseline_pilot`` when given);
    ``reference``: the run every exact answer must equal bit for bit (the harness's reference).
    ``key``: the problem (dataset, shapes, batch, dtype, device ...; :func:`problem_key`): with
    one the decision is kept and looked up (:func:`ffsolve.autotune.store` /
    :func:`~ffsolve.autotune.lookup`), in ``decisions`` (a JSON file) when given; without one
    every ``auto`` candidate pilots on its own first call. ``replay``: never pilot (needs a key).
    ``inexact``: see :func:`eligibility`.

    Candidates whose ``extra`` names another ``quantity`` than the baseline's (a run that times
    something else, e.g. ``time_to_top5`` beside one solve) are left out; ``auto`` inherits the
    baseline's quantity with the chosen run's other fields. The returned candidate's
    ``extra["auto"]`` is filled in by its first call, it takes the chosen candidate's other
    ``extra`` fields, and its ``tolerance`` becomes the chosen candidate's (``None`` when the
    chosen one is bitwise), so the harness judges the ``auto`` output as the chosen run's.
    The reference candidate's program is wrapped to keep its last complete output (what the
    harness's own call of it computed), so the pilot need not run it again.
    """
    from ffsolve import __version__, autotune

    spec = run if isinstance(run, RunSpec) else parse_run_name(run)
    if spec.method != AUTO:
        raise ValueError(f"an auto run's method must be {AUTO!r}, got {spec.name!r}")
    if replay and key is None:
        raise ValueError("auto replay needs a key to look its decision up")
    # Runs that time another quantity than the baseline (a record's "quantity": training steps,
    # time to a stable top-5; none = one solve) do not answer the run, whatever their speed.
    quantities = {c.name: c.extra.get("quantity") for c in candidates}
    for role, name in (("native sequential path", baseline), ("reference", reference)):
        if name not in quantities:
            raise ValueError(f"auto needs the {role} {name!r} among the candidates {list(quantities)}")
    pool = [c for c in candidates if c.spec.method != AUTO and quantities[c.name] == quantities[baseline]]
    by_name = {c.name: c for c in pool}
    run_tol = spec.stopping_tol()
    inexact = tuple(inexact)
    allow = bool(allow_within_tolerance)
    state = AutoState()
    candidate = Candidate(spec, lambda: None, extra=dict(extra or {}))
    full_key = None if key is None else {
        "kind": "ffsolve.kit.auto", "problem": problem_key(**key), "run": spec.name, "run_tol": run_tol,
        "candidates": sorted(by_name), "baseline": baseline, "reference": reference,
        "allow_within_tolerance": allow, "threads": autotune._threads(), "version": __version__}
    text_key = None if full_key is None else json.dumps(full_key, sort_keys=True)

    ref = by_name[reference]
    original = ref.program

    @functools.wraps(original)
    def keep_reference(*args, **kwargs):
        out = original(*args, **kwargs)
        if not stopped_by_deadline(out) and bool(getattr(out, "converged", True)):
            state.reference_result = out
        return out

    ref.program = keep_reference

    def stored() -> dict | None:
        if text_key is None:
            return None
        found = autotune.lookup(text_key, path=decisions, replay=replay)
        if found is None:
            return None
        method = found.get("method")
        usable = method in by_name and eligibility(
            by_name[method].spec, run_tol, inexact, tolerance=by_name[method].tolerance,
            allow_within_tolerance=allow)[0]
        if not usable:
            if replay:
                raise LookupError(f"autotune replay: the decision for {text_key} names {method!r}, "
                                  f"which cannot answer this run (candidates {sorted(by_name)})")
            return None
        return found

    def decide():
        begin = time.perf_counter()
        found = stored()
        if found is not None:
            chosen = found["method"]
            result = by_name[chosen].program()
            sync(output(result))
            state.decided_by, state.reason = "stored", str(found.get("reason") or f"stored decision: {chosen}")
            state.pilots = [p for p in found.get("pilots", []) if isinstance(p, dict)]
            state.predicted_s = found.get("predicted_baseline_s")
            state.first_call_work = _work(result)
            state.first_call_s = time.perf_counter() - begin
            state.pilot_s = 0.0
        else:
            outcome = run_pilot(pool, baseline, reference=reference, baseline_pilot=baseline_pilot,
                                run_tol=run_tol, inexact=inexact, allow_within_tolerance=allow,
                                reference_result=state.reference_result, output=output, sync=sync)
            chosen, result = outcome.choice.run, outcome.result
            state.decided_by, state.reason = "pilot", outcome.choice.reason
            state.pilots, state.predicted_s = outcome.records, outcome.predicted_baseline_s
            state.first_call_work = outcome.work
            state.first_call_s = time.perf_counter() - begin
            state.pilot_s = max(0.0, state.first_call_s - outcome.choice.seconds)
            if text_key is not None:
                autotune.store(text_key, {
                    "method": chosen, "reason": outcome.choice.reason, "time_s": outcome.choice.seconds,
                    "candidates": {r["run"]: {"time_s": r["seconds"] if r["finished"] else None,
                                              "eligible": r["eligible"]} for r in outcome.records},
                    "pilots": outcome.records, "predicted_baseline_s": outcome.predicted_baseline_s,
                    "first_call_s": state.first_call_s, "key": full_key}, path=decisions)
        state.chosen = chosen
        candidate.tolerance = by_name[chosen].tolerance
        # The chosen run's experiment fields (model size, checkpoint, ...) describe auto's too.
        for name, value in by_name[chosen].extra.items():
            candidate.extra.setdefault(name, value)
        return result

    def program():
        state.calls += 1
        if state.chosen is None:
            result = decide()
            candidate.extra["auto"] = auto_record(state, baseline, reference, run_tol, allow,
                                                  full_key, decisions, replay)
            return result
        candidate.extra["auto"]["calls"] = state.calls
        return by_name[state.chosen].program()  # the steady state: the chosen program alone

    def prepare():
        # Called once by the harness after its warm-up rounds: with none, the first call is here,
        # untimed, and every timed call is the steady state.
        if state.chosen is None:
            program()

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
    candidate.prepare = prepare
    candidate.traced = traced if any(c.traced is not None for c in pool) else None
    return candidate


def auto_record(state: AutoState, baseline: str, reference: str, run_tol: float, allow: bool,
                key: dict | None, decisions: str | None, replay: bool, validate: bool = True) -> dict:
    value = {
        "chosen": state.chosen,
        "reason": state.reason,
        "baseline": baseline,
        "reference": reference,
        "run_tol": float(run_tol),
        "decided_by": state.decided_by,
        "replay": bool(replay),
        "allow_within_tolerance": bool(allow),
        "key": key,
        "decisions_file": None if decisions is None else str(decisions),
        "first_call_s": state.first_call_s,
        "first_call_network_evaluations": state.first_call_work,
        "pilot_s": state.pilot_s,
        "predicted_baseline_s": state.predicted_s,
        "pilots": list(state.pilots),
        "calls": state.calls,
    }
    if validate:
        validate_auto(value)
    return value


# ------------------------------------------------------------------------------ wiring helpers


@dataclass(frozen=True)
class AutoSettings:
    """What an experiment hands every ``auto`` run of one measure job: whether within-tolerance
    answers are allowed, the decisions file (``None``: memory only) and replay mode."""

    allow_within_tolerance: bool = False
    decisions: str | None = None
    replay: bool = False

    def kwargs(self) -> dict:
        return {"allow_within_tolerance": self.allow_within_tolerance, "decisions": self.decisions,
                "replay": self.replay}


def auto_settings(timing: Any = None, decisions: str | None = None) -> AutoSettings:
    """:class:`AutoSettings` from the job's timing settings (``timing.auto_allow_within_tolerance``,
    ``timing.auto_replay``) and the decisions file the rule passes (``params.autotune``)."""
    return AutoSettings(bool(getattr(timing, "auto_allow_within_tolerance", False)),
                        None if not decisions else str(decisions),
                        bool(getattr(timing, "auto_replay", False)))


def split_auto(specs: Sequence[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
    """The configured runs without ``auto`` (built by the experiment), and the ``auto`` runs."""
    return [s for s in specs if s.method != AUTO], [s for s in specs if s.method == AUTO]


def add_auto(candidates: list[Candidate], auto_runs: Sequence[RunSpec], *,
             settings: AutoSettings | None = None, **kwargs) -> list[Candidate]:
    """``candidates`` plus one :func:`auto_candidate` per ``auto`` run (each over ``candidates``),
    with ``settings`` (:func:`auto_settings`) applied."""
    given = {} if settings is None else settings.kwargs()
    return list(candidates) + [auto_candidate(candidates, run=spec, **{**given, **kwargs}) for spec in auto_runs]
