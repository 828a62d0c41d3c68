"""What a job hands to an experiment (:class:`Job`), its outputs by run, progress bars, and the
measure job's tail (:func:`measure_and_write`).

The workflow builds a :class:`Job` from a Snakemake rule (:func:`ffsolve.workflow.jobs.run_snakemake_job`);
an experiment's ``*_job(job)`` adapter reads only it, so the experiments never import the workflow.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What a Snakemake job hands to library code: named paths, params and threads.

    No config: a job reads only what its rule passes through ``params``, which is what Snakemake
    tracks, so a changed setting reruns exactly the jobs that read it.
    """

    input: Any
    output: Any
    params: Any
    threads: int
    wildcards: Any
    log_path: Optional[str] = None


def progress(iterable: Iterable, desc: str, total: Optional[int] = None, **kwargs):
    """A progress bar on stderr (which a Snakemake job's log captures), off when not wanted.

    Set ``FFSOLVE_PROGRESS=0`` to silence the bars (tests do).
    """
    disable = os.environ.get("FFSOLVE_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr,
                mininterval=1.0, **kwargs)


def outputs_by_run(runs, paths) -> dict[str, str]:
    """``{run: path}`` from a rule's ``runs`` param and an output list expanded in the same order."""
    runs, paths = list(runs), [str(p) for p in paths]
    if len(runs) != len(paths):
        raise ValueError(f"{len(runs)} runs but {len(paths)} output paths")
    return dict(zip(runs, paths))


def measure_arguments(job: Job) -> dict:
    """The keyword arguments every experiment's ``measure`` shares (CONTRIBUTING.md's contract),
    read from its measure rule's job: ``dataset``, ``seed``, ``timing``, ``metrics``,
    ``traces``, ``threads`` and ``autotune``. An adapter adds only its own inputs."""
    from ffsolve.kit.harness import TimingSettings
    from ffsolve.kit.settings import settings_from

    return dict(
        dataset=job.wildcards.dataset,
        seed=job.params.seed,
        timing=settings_from(TimingSettings, job.params.timing, "timing"),
        metrics=outputs_by_run(job.params.runs, job.output.metrics),
        traces=outputs_by_run(job.params.runs, job.output.traces),
        threads=job.threads,
        autotune=getattr(job.params, "autotune", None),
    )


def measure_and_write(candidates: Iterable, context, *, timing, metrics: Mapping[str, str],
                      traces: Optional[Mapping[str, str]] = None, auto_runs: Sequence = (),
                      autotune: Optional[str] = None, after: Optional[Callable[[dict], None]] = None,
                      **auto_options) -> dict[str, dict]:
    """The tail of every experiment's measure job, written once.

    The ``auto`` runs ``auto_runs`` are added over ``candidates``
    (:func:`~ffsolve.kit.auto.add_auto`, with the job's auto settings from ``timing`` and the
    decisions file ``autotune``, and ``auto_options`` such as the loop's pilot and the problem
    key); an experiment whose pilot closes over its own candidate builder adds them there and
    passes none. Then every run is timed in this one process (:func:`~ffsolve.kit.measure`, with
    ``timing``'s repeats, warm-up and minimum sample), ``after(measurements)`` scores what is
    scored after the clock stopped (it may update the measurements in place), and one validated
    record (and trace) per run is written (:func:`~ffsolve.kit.write_runs`) under ``context``.
    """
    from ffsolve.kit.auto import add_auto, auto_settings
    from ffsolve.kit.harness import measure, write_runs

    candidates = list(candidates)
    if auto_runs:
        candidates = add_auto(candidates, auto_runs, settings=auto_settings(timing, autotune), **auto_options)
    log.info("%s %s: measuring runs %s", context.experiment, context.dataset, [c.name for c in candidates])
    measurements = measure(candidates, repeats=timing.repeats, warmup=timing.warmup,
                           min_sample_s=timing.min_sample_s)
    if after is not None:
        after(measurements)
    return write_runs(measurements, context, metrics, traces)
