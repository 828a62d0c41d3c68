"""The machinery of ``method="auto"`` (:mod:`ffsolve.autotune`, its public face, says what it does
and how): the decisions (in memory and in a file), the problem's key, the piloting, and the auto
solves of :func:`ffsolve.solve` and :func:`ffsolve.solve_recurrence`.

It sits below the solvers and imports none of them: a solver that dispatches ``method="auto"``
here hands over its own entry point (``solve=``, ``solve_recurrence=``), and
:mod:`ffsolve.autotune`, above the solvers, does the same for its callers. Every name here is
also importable from :mod:`ffsolve.autotune`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffsolve._version import __version__
from ffsolve.deadline import TIE, Deadline
from ffsolve.solvers.result import NotBitwiseWarning, SolveResult

SOLVE_CANDIDATES = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs")
RECURRENCE_CANDIDATES = ("sequential", "jacobi", "newton", "quasi_newton")

_LOCK = threading.Lock()
_DECISIONS: dict[str, dict] = {}


@dataclass
class _Settings:
    path: Path | None = None
    replay: bool = False


_SETTINGS = _Settings(Path(os.environ["FFSOLVE_AUTOTUNE_FILE"])
                      if os.environ.get("FFSOLVE_AUTOTUNE_FILE") else None)


def configure(path: str | os.PathLike | None = None, *, replay: bool = False) -> None:
    """Keep decisions in ``path`` (JSON; read now if it exists, written after each new decision),
    and with ``replay=True`` never pilot: every key must already have a decision."""
    with _LOCK:
        _SETTINGS.path = None if path is None else Path(path)
        _SETTINGS.replay = bool(replay)
        if _SETTINGS.path is not None and _SETTINGS.path.exists():
            _DECISIONS.update(_read(_SETTINGS.path))


def forget() -> None:
    """Drop the decisions held in memory (the file, if any, is left alone)."""
    with _LOCK:
        _DECISIONS.clear()


def decisions() -> dict[str, dict]:
    """A copy of the decisions held in memory, by key."""
    with _LOCK:
        return {k: dict(v) for k, v in _DECISIONS.items()}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"the autotune decisions file {path} is not valid JSON ({err}); delete "
                         "it to pilot again") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "method" in v
                                             for v in data.values()):
        raise ValueError(f"the autotune decisions file {path} does not hold decisions by key")
    return data


def store(key: str, decision: dict, *, path: str | os.PathLike | None = None) -> None:
    """Keep ``decision`` (a dict with at least ``"method"``) for ``key``, in memory and in the
    configured file (or in ``path``, for a caller that keeps its own file: the workflow's
    experiments, one file per experiment and dataset). For callers with their own candidates."""
    if not isinstance(decision, dict) or "method" not in decision:
        raise ValueError(f"a decision must be a dict with a 'method', got {decision!r}")
    _store(key, decision, None if path is None else Path(path))


def lookup(key: str, *, path: str | os.PathLike | None = None,
           replay: bool | None = None) -> dict | None:
    """The decision kept for ``key`` (from memory, or the configured file or ``path``), or
    ``None``; in replay mode (the configured one, or ``replay``) a missing key is a
    :class:`LookupError` naming it."""
    found = _lookup(key, None if path is None else Path(path))
    if found is None and (_SETTINGS.replay if replay is None else replay):
        raise LookupError(f"autotune replay: no decision for the key {key}"
                          + (f" in {path}" if path is not None else "")
                          + "; run once without replay to make one")
    return found


def _store(key: str, decision: dict, path: Path | None = None) -> None:
    with _LOCK:
        _DECISIONS[key] = decision
        path = path or _SETTINGS.path
        if path is None:
            return
        merged = _read(path) if path.exists() else {}
        merged[key] = decision
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)


def _lookup(key: str, path: Path | None = None) -> dict | None:
    with _LOCK:
        path = path or _SETTINGS.path
        if key not in _DECISIONS and path is not None and path.exists():
            _DECISIONS.update(_read(path))
        return _DECISIONS.get(key)


# ----------------------------------------------------------------------------------- the key


def _threads() -> int:
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else int(os.cpu_count() or 1)


def _describe_arrays(tree) -> list:
    from ffsolve.recurrence.state import StateLayout, is_array

    leaves = [tree] if is_array(tree) else StateLayout(tree).leaves(tree)
    return [(tuple(int(n) for n in a.shape), str(a.dtype), str(getattr(a, "device", "cpu")))
            for a in leaves]


def _name_of(fn) -> str:
    fn = getattr(fn, "step", fn)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def make_key(solver: str, fn, arrays: list, tol: float, candidates, extra: Mapping | None,
             key: str | None) -> str:
    parts = {
        "solver": solver, "fn": key if key is not None else _name_of(fn),
        "arrays": [_describe_arrays(a) for a in arrays], "tol": float(tol),
        "threads": _threads(), "candidates": sorted(candidates) + sorted(extra or {}),
        "version": __version__,
    }
    return json.dumps(parts, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------- piloting


def _host(x) -> list[np.ndarray]:
    from ffsolve.recurrence.state import StateLayout, is_array

    leaves = [x] if is_array(x) else StateLayout(x).leaves(x)
    return [a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a) for a in leaves]


def _sync(x) -> None:
    for a in ([x] if hasattr(x, "shape") else list(x) if isinstance(x, (tuple, list)) else []):
        if hasattr(a, "block_until_ready"):
            a.block_until_ready()
        elif hasattr(a, "is_cuda") and a.is_cuda:
            import torch

            torch.cuda.synchronize(a.device)


def _agrees(result_x, reference, tol: float, allow: float, converged: bool) -> bool:
    got, want = _host(result_x), _host(reference)
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return False
    if tol > 0:
        return converged
    if all(np.array_equal(g, w) for g, w in zip(got, want)):
        return True
    return converged and allow > 0 and all(np.allclose(g, w, rtol=0, atol=allow)
                                           for g, w in zip(got, want))


def _pilot(run: Callable[[str, float | None], Any], names: list[str], extra: Mapping,
           tol: float, allow: float) -> tuple[str, dict, Any, float]:
    """Time every candidate under the best time so far; returns (winner, report, its result,
    the pilot's work in full passes)."""
    report: dict[str, dict] = {}
    best_name, best_time, best_result = None, None, None
    work = 0.0
    reference = None
    for name in names + [n for n in extra if n not in names]:
        budget = None if best_time is None else best_time / (1 + TIE)
        # A warm-up (compiles, allocations) under the deadline, then the timed run under it;
        # only the timed run's stop by the deadline means the candidate lost.
        for attempt in ("warm-up", "timed"):
            start = time.perf_counter()
            if budget is None:
                deadline = None
            elif attempt == "warm-up":  # compiles count here: a hard stop, no projection
                deadline = start + budget
            else:  # the projection may stop a run that is going to lose (ffsolve.deadline)
                deadline = Deadline(at=start + budget, beat=budget, start=start)
            res = run(name, deadline)
            _sync(getattr(res, "x", res))
            elapsed = time.perf_counter() - start
            work += float(getattr(res, "network_evaluations", 1.0) or 0.0)
        stopped = getattr(res, "stopped_by", None) in ("deadline", "max_iters")
        x = getattr(res, "x", res)
        converged = bool(getattr(res, "converged", True))
        if name == "sequential":
            reference = x
        finished = not stopped
        if reference is None:
            eligible = False  # no reference yet: cannot vouch for it
        elif name == "sequential":
            eligible = True
        else:
            eligible = finished and _agrees(x, reference, tol, allow, converged)
        report[name] = {"time_s": elapsed if finished else None, "eligible": bool(eligible)}
        if eligible and (best_time is None or elapsed < best_time):
            best_name, best_time, best_result = name, elapsed, res
    return best_name, report, best_result, work


def _decide(solver: str, fn, key: str, run, names, extra, tol, allow: float):
    if "sequential" not in names:
        raise ValueError(f"autotune candidates must include 'sequential' (the reference every "
                         f"answer is checked against), got {list(names)}")
    if isinstance(allow, bool) or not isinstance(allow, (int, float)) or not allow >= 0:
        raise ValueError(f"allow_within_tolerance must be a max-abs distance >= 0 (0: bitwise "
                         f"only), got {allow!r}")
    decision = lookup(key)  # in replay mode a missing key is an error naming it
    if decision is not None and decision["method"] in set(names) | set(extra or {}):
        return decision, None, 0.0, 0.0
    start = time.perf_counter()
    name, report, result, work = _pilot(run, list(names), extra or {}, tol, allow)
    first_call = time.perf_counter() - start
    decision = {"method": name, "candidates": report, "time_s": report[name]["time_s"]}
    _store(key, decision)
    return decision, result, first_call, work


def _native(result_type, name: str, x, tol: float, length: int):
    """A user's own sequential path's output, as a result record (one pass of work)."""
    return result_type(x=x, iterations=length, converged=True, method=name, block_size=None,
                       tol=tol, sequence_length=length, network_evaluations=1.0,
                       stopped_by="sequential")


def _finish(res, decision, piloted: bool, first_call_s: float, work: float):
    info = {"chosen": decision["method"], "piloted": piloted,
            "candidates": decision.get("candidates", {}),
            "first_call_s": first_call_s if piloted else None}
    if piloted:
        res.network_evaluations = work
    res.autotune = info
    return res


def solve_auto(f, x0, *, solve: Callable, get_solver: Callable, block_size=None,
               tol: float = 0.0, max_iters=None, axis: int = 0, candidates=SOLVE_CANDIDATES,
               extra: Mapping[str, Callable] | None = None, allow_within_tolerance: float = 0.0,
               key: str | None = None):
    """``ffsolve.solve(f, x0, method="auto", ...)`` (:func:`ffsolve.autotune.solve_auto`), by the
    caller's ``solve`` and ``get_solver`` (those of :mod:`ffsolve.solvers.core`)."""
    for name in candidates:
        get_solver(name)  # an unknown name fails here, listing the valid ones
    the_key = make_key("solve", f, [x0], tol, candidates, extra, key)

    length = int(x0.shape[axis])

    def run(name, deadline):
        if extra and name in extra:
            return _native(SolveResult, name, extra[name](), tol, length)
        blocks = block_size if name in ("gs_jacobi", "jacobi_gs") else None
        return solve(f, x0, name, block_size=blocks, tol=tol, max_iters=max_iters, axis=axis,
                     deadline=deadline)

    decision, result, first, work = _decide("solve", f, the_key, run, candidates, extra, tol,
                                            allow_within_tolerance)
    piloted = result is not None
    if not piloted:
        result = run(decision["method"], None)
    return _finish(result, decision, piloted, first, work)


def solve_recurrence_auto(step, s0, inputs, *, solve_recurrence: Callable, methods,
                          result_type: type, tol: float = 0.0, max_iters=None, jacobian=None,
                          damping=None, time_axis: int = 0, check_loop: bool = True,
                          candidates=RECURRENCE_CANDIDATES,
                          extra: Mapping[str, Callable] | None = None,
                          allow_within_tolerance: float = 0.0, key: str | None = None):
    """``ffsolve.solve_recurrence(step, s0, inputs, method="auto", ...)``
    (:func:`ffsolve.autotune.solve_recurrence_auto`), by the caller's ``solve_recurrence``, its
    ``methods`` and its ``result_type`` (those of :mod:`ffsolve.recurrence.solve`)."""
    import warnings

    unknown = [c for c in candidates if c not in methods]
    if unknown:
        raise ValueError(f"autotune candidates must be among {list(methods)}, got {unknown}")
    the_key = make_key("recurrence", step, [s0, inputs], tol, candidates, extra, key)

    length = int(inputs.shape[time_axis])

    def run(name, deadline, quiet=True):
        if extra and name in extra:
            return _native(result_type, name, extra[name](), tol, length)
        with warnings.catch_warnings():
            if quiet:  # a candidate that is not the loop's bits simply loses; not the user's news
                warnings.simplefilter("ignore", NotBitwiseWarning)
            return solve_recurrence(
                step, s0, inputs, name, tol=tol, max_iters=max_iters,
                jacobian=jacobian if name in ("newton", "quasi_newton", "damped_newton") else None,
                damping=damping if name == "damped_newton" else None, time_axis=time_axis,
                check_loop=check_loop, deadline=deadline)

    decision, result, first, work = _decide("recurrence", step, the_key, run, candidates, extra,
                                            tol, allow_within_tolerance)
    piloted = result is not None
    if not piloted:
        result = run(decision["method"], None, quiet=False)
    return _finish(result, decision, piloted, first, work)
