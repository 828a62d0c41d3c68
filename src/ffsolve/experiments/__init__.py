"""One package per experiment, each with the same roles (DESIGN.md §2): ``layout.py`` (torch-free:
blocked methods, the keys each job reads, run names, figures), ``system.py`` (the problem and its
candidates), ``experiment.py`` (the jobs, which take a :class:`ffsolve.kit.Job`), ``plots.py``.

:data:`EXPERIMENTS` is the one list of them: the workflow's config sections, rules and targets
follow it (workflow/rules/common.smk)."""

from __future__ import annotations

import importlib
from types import ModuleType

EXPERIMENTS = ("solver_demo", "made", "pixelcnnpp", "densenet", "rnn_backprop", "rnn_forward",
               "speculative")


def layout_of(experiment: str) -> ModuleType:
    """``ffsolve.experiments.<experiment>.layout`` (imports no torch or JAX)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {list(EXPERIMENTS)}")
    return importlib.import_module(f"ffsolve.experiments.{experiment}.layout")
