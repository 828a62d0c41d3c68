"""Measure every configured method on the random map in one process (the shared harness)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import ffsolve
from ffsolve.experiments.solver_demo.layout import BLOCKED
from ffsolve.experiments.solver_demo.system import make_map
from ffsolve.kit import (
    AutoSettings,
    Candidate,
    Job,
    RunContext,
    TimingSettings,
    add_auto,
    auto_settings,
    device_description,
    expand_runs,
    loop_pilot,
    measure_and_write,
    outputs_by_run,
    pilot_steps,
    settings_from,
    split_auto,
)

log = logging.getLogger(__name__)

METHODS = ("sequential", "jacobi", "gs_jacobi", "jacobi_gs")


@dataclass(frozen=True)
class Settings:
    """``solver_demo.*`` for one dataset (see workflow/schemas/solver_demo.schema.yaml)."""

    length: int
    batch: int
    coupling: float
    tol: float
    methods: tuple[str, ...]
    block_sizes: tuple[int, ...]


def runs(settings: Settings) -> list[str]:
    return [r.name for r in expand_runs(settings.methods, settings.block_sizes, blocked=BLOCKED)]


def candidates(settings: Settings, seed: int, auto: AutoSettings | None = None,
               dataset: str = "tanh_map") -> list[Candidate]:
    f, x0 = make_map(settings.length, settings.batch, settings.coupling, seed)
    out = []
    specs, autos = split_auto(expand_runs(settings.methods, settings.block_sizes, blocked=BLOCKED))
    for spec in specs:
        def program(spec=spec, trace=False, deadline=None):
            return ffsolve.solve(f, x0, method=spec.method, block_size=spec.block_size,
                                 tol=settings.tol, trace=trace, trace_batch_axis=1 if trace else None,
                                 deadline=deadline)

        def traced(program=program):
            result = program(trace=True)
            error, change = result.trace.error, result.trace.change
            return result, {"error_mean": error.mean(axis=1), "error_std": error.std(axis=1),
                            "change_mean": change.mean(axis=1), "change_std": change.std(axis=1)}

        out.append(Candidate(spec, program, traced, extra={"coupling": settings.coupling}))
    # auto (ffsolve.kit.auto): the loop's first 2% of positions scaled by T/k predicts it; the
    # parallel methods run first under deadlines, the loop last, cut by the best time.
    pilot = loop_pilot(lambda k: ffsolve.solve(f, x0, method="sequential", max_iters=k),
                       pilot_steps(settings.length), settings.length)
    key = {"experiment": "solver_demo", "dataset": dataset, "shape": x0.shape,
           "dtype": x0.dtype, "device": "cpu", "coupling": settings.coupling, "tol": settings.tol}
    return add_auto(out, autos, settings=auto, baseline_pilot=pilot, key=key)


def measure_runs(settings: Settings, *, dataset: str, seed: int, timing: TimingSettings,
                 metrics: Mapping[str, str], traces: Mapping[str, str], threads: int | None = None,
                 autotune: str | None = None) -> dict:
    """Every method in one process, timed round-robin; one record and trace per run. ``autotune``:
    the decisions file of the ``auto`` runs (``None``: kept in memory only)."""
    context = RunContext("solver_demo", dataset, seed, device_description(None), settings.batch, threads)
    return measure_and_write(candidates(settings, seed, auto_settings(timing, autotune), dataset), context,
                             timing=timing, metrics=metrics, traces=traces)


def measure_job(job: Job) -> dict:
    """The ``solver_demo_measure`` rule."""
    settings = settings_from(Settings, job.params.settings, "solver_demo")
    return measure_runs(
        settings,
        dataset=job.wildcards.dataset,
        seed=job.params.seed,
        timing=settings_from(TimingSettings, job.params.timing, "timing"),
        metrics=outputs_by_run(job.params.runs, job.output.metrics),
        traces=outputs_by_run(job.params.runs, job.output.traces),
        threads=job.threads,
        autotune=getattr(job.params, "autotune", None),
    )
