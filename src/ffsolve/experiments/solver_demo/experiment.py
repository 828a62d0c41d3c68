"""Measure every configured method on the random map in one process (the shared harness)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from ffsolve.experiments.solver_demo.layout import BLOCKED
from ffsolve.experiments.solver_demo.system import candidates
from ffsolve.kit import (
    Job,
    RunContext,
    TimingSettings,
    auto_settings,
    device_description,
    expand_runs,
    measure_and_write,
    measure_arguments,
    settings_from,
)

log = logging.getLogger(__name__)

METHODS = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs")


@dataclass(frozen=True)
class MeasureSettings:
    """``solver_demo.*`` for one dataset (see config.schema.yaml beside this file)."""

    length: int
    batch: int
    coupling: float
    tol: float
    methods: tuple[str, ...]
    block_sizes: tuple[int, ...]


def runs(settings: MeasureSettings) -> list[str]:
    return [r.name for r in expand_runs(settings.methods, settings.block_sizes, blocked=BLOCKED)]


def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: TimingSettings,
            metrics: Mapping[str, str], traces: Mapping[str, str], threads: int | None = None,
            autotune: str | None = None) -> dict:
    """Every method in one process, timed round-robin; one record and trace per run. ``autotune``:
    the decisions file of the ``auto`` runs (``None``: kept in memory only)."""
    context = RunContext("solver_demo", dataset, seed, device_description(None), settings.batch, threads)
    return measure_and_write(candidates(settings, seed, auto_settings(timing, autotune), dataset), context,
                             timing=timing, metrics=metrics, traces=traces)


def measure_job(job: Job) -> dict:
    """The ``solver_demo_measure`` rule."""
    settings = settings_from(MeasureSettings, job.params.settings, "solver_demo")
    return measure(
        settings,
        **measure_arguments(job),
    )
