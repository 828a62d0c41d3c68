"""Run names, built once for every experiment: ``<method>[_b<block size>][_k<budget>]``.

A run is one configured way of computing the result, and the folder of its record:
``results/<experiment>/<dataset>/<run>/metrics.json``. Examples: ``sequential``, ``jacobi``,
``gs_jacobi_b16`` (block of 16 positions), ``jacobi_k10`` (at most 10 parallel steps).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

_NAME = re.compile(r"^(?P<method>[a-z][a-z0-9_]*?)(?:_b(?P<block>[1-9][0-9]*))?(?:_k(?P<budget>[1-9][0-9]*))?$")


@dataclass(frozen=True)
class RunSpec:
    """One run: a method, and the block size or step budget it runs with (``None`` when unused)."""

    method: str
    block_size: Optional[int] = None
    budget: Optional[int] = None

    @property
    def name(self) -> str:
        return run_name(self.method, self.block_size, self.budget)


def run_name(method: str, block_size: Optional[int] = None, budget: Optional[int] = None) -> str:
    if not _NAME.match(method) or re.search(r"_[bk][0-9]+$", method):
        raise ValueError(f"method name {method!r} cannot be part of a run name")
    name = method
    if block_size is not None:
        name += f"_b{int(block_size)}"
    if budget is not None:
        name += f"_k{int(budget)}"
    return name


def parse_run_name(name: str, methods: Optional[Iterable[str]] = None) -> RunSpec:
    """``"gs_jacobi_b16"`` -> ``RunSpec("gs_jacobi", 16)``; refuses methods not in ``methods``."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a run name (<method>[_b<block size>][_k<budget>])")
    spec = RunSpec(
        match["method"],
        int(match["block"]) if match["block"] else None,
        int(match["budget"]) if match["budget"] else None,
    )
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
) -> list[RunSpec]:
    """Every run of a config: a method in ``blocked`` once per block size, one in ``budgeted`` once
    per budget (and once without, to tolerance), any other method once.

    ``block_sizes`` is one list for every blocked method, or a mapping from each blocked method to
    its own list (the paper's PixelCNN++ runs Jacobi-GS on rows and GS-Jacobi on bands of rows).
    """
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
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"the configured runs repeat a name: {names}")
    return runs


def run_names(*args, **kwargs) -> list[str]:
    """The names of :func:`expand_runs` (what the rules expand into result paths)."""
    return [run.name for run in expand_runs(*args, **kwargs)]
