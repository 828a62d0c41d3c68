"""Run names, built once for every experiment: ``<method>[_b<block size>][_k<budget>][_t<tol>]``.

A run is one configured way of computing the result, and the folder of its record:
``results/<experiment>/<dataset>/<run>/metrics.json``. Examples: ``sequential``, ``jacobi``,
``gs_jacobi_b16`` (block of 16 positions), ``jacobi_k10`` (at most 10 parallel steps),
``jacobi_t1e-04`` (stop once max |x_new − x_old| <= 1e-4: a point of the speed/error frontier).

A run's stopping tolerance is written in one canonical form, :func:`format_tol`: the shortest
scientific notation that reads back as the same float (``1e-04``, ``2.5e-03``), so a name and its
:class:`RunSpec` round-trip. Tolerance 0 (exact) has no suffix: ``RunSpec(tol=0.0)`` is
``RunSpec(tol=None)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

_TOL = r"[1-9](?:\.[0-9]*[1-9])?e[-+][0-9]{2,3}"
_NAME = re.compile(
    r"^(?P<method>[a-z][a-z0-9_]*?)(?:_b(?P<block>[1-9][0-9]*))?(?:_k(?P<budget>[1-9][0-9]*))?"
    rf"(?:_t(?P<tol>{_TOL}))?$"
)
_SUFFIX = re.compile(rf"_(?:[bk][0-9]+|t{_TOL})$")

# Methods that are sequential baselines (the native loop, a cached loop, a forward pass): they
# have no stopping tolerance, so expand_runs never adds a ``_t`` run of them.
SEQUENTIAL_PREFIXES = ("sequential", "bptt", "forward")


def is_sequential_baseline(method: str) -> bool:
    return method.startswith(SEQUENTIAL_PREFIXES)


def format_tol(tol: float) -> str:
    """The canonical text of a stopping tolerance in a run name: ``1e-04``, ``2.5e-03``.

    The shortest mantissa that reads back as exactly ``tol``; a two-digit (or longer) signed
    exponent. Only positive finite values have a text (tolerance 0 means no suffix).
    """
    tol = float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"a run's tolerance must be a positive finite number, got {tol!r}")
    for digits in range(17):
        text = f"{tol:.{digits}e}"
        if float(text) == tol:
            break
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


@dataclass(frozen=True)
class RunSpec:
    """One run: a method, and the block size, step budget or stopping tolerance it runs with
    (``None`` when unused; a tolerance of 0 is stored as ``None``: exact, the default)."""

    method: str
    block_size: Optional[int] = None
    budget: Optional[int] = None
    tol: Optional[float] = None

    def __post_init__(self):
        if self.tol is not None:
            tol = float(self.tol)
            if tol == 0.0:
                object.__setattr__(self, "tol", None)
            else:
                format_tol(tol)  # refuses negative, NaN and infinite tolerances
                object.__setattr__(self, "tol", tol)

    @property
    def name(self) -> str:
        return run_name(self.method, self.block_size, self.budget, self.tol)

    def stopping_tol(self, default: float = 0.0) -> float:
        """The tolerance this run stops at: its own, else ``default`` (the experiment's setting)."""
        return float(default) if self.tol is None else self.tol


def run_name(method: str, block_size: Optional[int] = None, budget: Optional[int] = None,
             tol: Optional[float] = None) -> str:
    if not _NAME.match(method) or _SUFFIX.search(method):
        raise ValueError(f"method name {method!r} cannot be part of a run name")
    name = method
    if block_size is not None:
        name += f"_b{int(block_size)}"
    if budget is not None:
        name += f"_k{int(budget)}"
    if tol is not None and float(tol) != 0.0:
        name += f"_t{format_tol(tol)}"
    return name


def parse_run_name(name: str, methods: Optional[Iterable[str]] = None) -> RunSpec:
    """``"gs_jacobi_b16"`` -> ``RunSpec("gs_jacobi", 16)``; refuses methods not in ``methods``."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a run name (<method>[_b<block size>][_k<budget>][_t<tol>])")
    spec = RunSpec(
        match["method"],
        int(match["block"]) if match["block"] else None,
        int(match["budget"]) if match["budget"] else None,
        float(match["tol"]) if match["tol"] else None,
    )
    if spec.name != name:
        raise ValueError(f"{name!r} is not in canonical form; write it {spec.name!r}")
    if methods is not None and spec.method not in set(methods):
        raise ValueError(f"run {name!r}: unknown method {spec.method!r}, expected one of {sorted(methods)}")
    return spec


def expand_runs(
    methods: Iterable[str],
    block_sizes: Iterable[int] | Mapping[str, Iterable[int]] = (),
    budgets: Iterable[int] = (),
    *,
    blocked: Iterable[str] = (),
    budgeted: Iterable[str] = (),
    tols: Iterable[float] | Mapping[str, Iterable[float]] = (),
) -> list[RunSpec]:
    """Every run of a config: a method in ``blocked`` once per block size, one in ``budgeted`` once
    per budget (and once without, to tolerance), any other method once.

    ``block_sizes`` is one list for every blocked method, or a mapping from each blocked method to
    its own list (the paper's PixelCNN++ runs Jacobi-GS on rows and GS-Jacobi on bands of rows).

    ``tols`` (the speed/error frontier) adds, after the exact runs, each parallel method's runs
    again at each tolerance > 0 (every block size of a blocked method; budgeted methods only
    without a budget): one list for every parallel method, or a mapping from a method (all its
    block sizes) or one exact run's name (``gs_jacobi_b28``: that block size only) to its list. Sequential baselines (:data:`SEQUENTIAL_PREFIXES`) never get a tolerance run, and
    ``auto`` gets one only when the mapping names it (each of its pilots costs time).
    Tolerance 0 is skipped (the exact runs exist anyway).
    """
    methods = list(methods)
    budgets = list(budgets)
    blocked, budgeted = set(blocked), set(budgeted)
    if isinstance(block_sizes, Mapping):
        per_method = {m: list(sizes) for m, sizes in block_sizes.items()}
        stray = sorted(set(per_method) - blocked)
        if stray:
            raise ValueError(f"block sizes given for {stray}, which take no blocks (blocked: {sorted(blocked)})")
    else:
        shared = list(block_sizes)
        per_method = {m: shared for m in blocked}
    runs: list[RunSpec] = []
    for method in methods:
        if method in blocked:
            if not per_method.get(method):
                raise ValueError(f"method {method!r} needs block sizes, and none are configured")
            runs.extend(RunSpec(method, block_size=b) for b in per_method[method])
        elif method in budgeted:
            runs.extend(RunSpec(method, budget=k) for k in budgets)
            runs.append(RunSpec(method))
        else:
            runs.append(RunSpec(method))
    runs.extend(_tolerance_runs(methods, runs, tols, blocked))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"the configured runs repeat a name: {names}")
    return runs


def _tolerance_runs(methods, exact_runs, tols, blocked) -> list[RunSpec]:
    if isinstance(tols, Mapping):
        # A config's mapping is merged over the default's, so it cannot drop the default's keys:
        # tolerances for a method that is not configured are skipped, not refused.
        per_method = {m: [float(t) for t in ts] for m, ts in tols.items()
                      if parse_run_name(m).method in methods}
        stray = sorted(set(per_method) - set(methods) - {run.name for run in exact_runs})
        if stray:
            raise ValueError(f"tolerances given for {stray}, which are not among the methods {methods} "
                             "or their runs")
        baselines = sorted(m for m in per_method if is_sequential_baseline(m))
        if baselines:
            raise ValueError(f"tolerances given for the sequential baselines {baselines}: they stop at T")
    else:
        shared = [float(t) for t in tols]
        per_method = {m: shared for m in methods if not is_sequential_baseline(m) and m != "auto"}
    extra: list[RunSpec] = []
    for method, method_tols in per_method.items():
        for tol in method_tols:
            if tol < 0 or not math.isfinite(tol):
                raise ValueError(f"tolerance {tol!r} for {method!r} must be a finite number >= 0")
    for run in exact_runs:
        if run.budget is None and run.tol is None:
            own = per_method.get(run.name, per_method.get(run.method, ()))
            extra.extend(RunSpec(run.method, run.block_size, None, tol) for tol in own if tol != 0.0)
    return extra


def run_names(*args, **kwargs) -> list[str]:
    """The names of :func:`expand_runs` (what the rules expand into result paths)."""
    return [run.name for run in expand_runs(*args, **kwargs)]


def exact_run_names(names: Iterable[str]) -> list[str]:
    """``names`` without the frontier runs (those with a stopping tolerance, ``_t<tol>``): what a
    per-experiment figure draws; the frontier figure draws the others."""
    return [name for name in names if parse_run_name(name).tol is None]
