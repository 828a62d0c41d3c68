"""The speculative job: every sampler on one model, in one process, on the same seeds.

:func:`measure` loads the model a source experiment trained (the rnn_forward GRU, the default
PixelCNN++: :data:`ffsolve.experiments.speculative.layout.SOURCES`), samples it with every
configured method through the shared harness (one timed call per method and repeat, repeats
interleaved; ``sequential`` on its first ``sequential_rows`` rows, every other method on all
``samples`` rows; each timed output checked against the first and, on those rows, against
``sequential``'s), then records per run: steps per sample (mean, spread), positions fixed per
step, model calls and network passes, the time, the per-sample statistics, and for ``sjd`` and
``coupled`` the distribution check against the sample-exact samples
(:func:`ffsolve.experiments.speculative.system.distribution_check`). ``measure_job`` is the thin
adapter the ``speculative_measure`` rule calls; it reads only params and paths.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from ffsolve.experiments.speculative import system
from ffsolve.kit import (
    Job,
    RunContext,
    TimingSettings,
    device_description,
    measure_arguments,
    run_names,
    seed_stream,
    settings_from,
    write_runs,
)
from ffsolve.kit import measure as kit_measure

log = logging.getLogger(__name__)
EXPERIMENT = "speculative"


@dataclass(frozen=True)
class MeasureSettings:
    """``speculative.*`` for one model (see config.schema.yaml beside this file)."""

    methods: tuple[str, ...]
    samples: int
    sequential_rows: Optional[int]
    window: Optional[int]
    repeats: int
    alpha: float


def runs(settings: MeasureSettings) -> list[str]:
    return run_names(settings.methods)


def measure(settings: MeasureSettings, *, dataset: str, seed: int, timing: Optional[TimingSettings] = None,
            metrics: Mapping[str, str], traces: Optional[Mapping[str, str]] = None,
            threads: Optional[int] = None, autotune: Optional[str] = None, checkpoint=None,
            device: str = "auto", model=None) -> dict:
    """Every configured method on ``dataset``'s model in this process; one record per run.

    ``timing``: of the shared timing settings only ``threads`` applies (the job runner sets it
    before this runs); each timed call is a whole sampling run, made ``settings.repeats`` times
    per method, interleaved, with no warm-up round (the model is compiled untimed first).
    ``autotune`` is unused (no ``auto`` run here). ``model``: a source model already loaded
    (tests), else the one of ``checkpoint``."""
    methods = list(settings.methods)
    if "sequential" not in methods:
        raise ValueError("config key 'speculative.methods' must include sequential (the reference)")
    if model is None:
        model = system.load_model(dataset, checkpoint, device)
    rows = settings.samples
    ref_rows = rows if settings.sequential_rows is None else min(settings.sequential_rows, rows)
    noise = system.gumbel_table(model, rows, seed_stream(seed, EXPERIMENT, dataset, "noise"))
    sampling_seed = seed_stream(seed, EXPERIMENT, dataset, "sampling")
    for batch in {rows, ref_rows}:  # untimed: JAX compiles one pass per batch shape here
        system.to_numpy(model(noise[:batch].argmax(-1)))
    latest: dict = {}
    candidates = system.candidates(model, methods, rows=rows, seed=sampling_seed, noise=noise,
                                   window=settings.window, sequential_rows=ref_rows, latest=latest)
    log.info("%s: %d positions x %d values, %d samples (sequential on %d), window %s, methods %s",
             dataset, model.length, model.num_classes, rows, ref_rows, settings.window, methods)
    # One timed call per method and repeat (a call is a whole sampling run, seconds long), the
    # repeats interleaved; the timed outputs are compared on the rows sequential sampled.
    measurements = kit_measure(candidates, repeats=settings.repeats, warmup=0,
                               output=lambda result: result.x[:ref_rows])

    stats = {m: system.statistics(model, latest[m].x) for m in methods}
    reference = "sequential" if ref_rows == rows or "jacobi" not in methods else "jacobi"
    checked = [m for m in system.CHECKED if m in methods]
    checks = system.distribution_check(stats, reference, checked, settings.alpha) if checked else {}
    jacobi_bitwise = measurements["jacobi"].bitwise_equal if "jacobi" in measurements else None
    if jacobi_bitwise is False:
        log.error("%s: jacobi differs from sequential on the same noise (%d rows): the sample-exact "
                  "guarantee failed", dataset, ref_rows)
    for method, m in measurements.items():
        res = latest[method]
        summary = system.step_summary(res)
        m.candidate.extra.update({
            "quantity": f"sample_{summary['rows']}",
            "source": dict(zip(("experiment", "dataset", "checkpoint_file"), system.source_of(dataset))),
            **model.description,
            **summary,
            "num_classes": int(model.num_classes),
            "compared_rows": ref_rows,
            "bits_per_dim_mean": float(stats[method]["bits_per_dim"].mean()),
            "mean_intensity_mean": float(stats[method]["mean_intensity"].mean()),
            "distribution_reference": reference,
            "distribution_check": checks.get(method),
            "jacobi_bitwise_equal_sequential": jacobi_bitwise,
        })
        m.trace = {"steps": np.asarray(res.steps), "accepted": np.asarray(res.accepted),
                   "fixed_at": np.asarray(res.fixed_at),
                   "samples": system.to_numpy(res.x).astype(np.uint8 if model.num_classes <= 256 else np.int64),
                   **{name: stats[method][name] for name in system.STATISTICS}}
        check = checks.get(method)
        log.info("%s %s: steps %.1f +- %.1f [%d, %d], %.2f fixed per step, %d calls, %.3g s%s",
                 dataset, method, summary["steps_mean"], summary["steps_std"], summary["steps_min"],
                 summary["steps_max"], summary["accepted_per_step"], summary["model_calls"],
                 m.timing.median_s, "" if check is None else
                 f", distribution check {'passed' if check['passed'] else 'FAILED'} (p "
                 + ", ".join(f"{k} {v['p_value']:.3g}" for k, v in check["statistics"].items()) + ")")
    context = RunContext(EXPERIMENT, dataset, seed, device_description(model.device), rows, threads)
    return write_runs(measurements, context, metrics, traces)


def measure_job(job: Job) -> dict:
    """The ``speculative_measure`` rule."""
    return measure(
        settings_from(MeasureSettings, job.params.settings, EXPERIMENT),
        **measure_arguments(job),
        checkpoint=job.input.checkpoint,
        device=job.params.device,
    )
