"""Running library code as a Snakemake job: logging into the rule's log, threads, progress, errors.

Every script in ``scripts/`` is two lines: import a function and hand it to
:func:`run_snakemake_job`, which builds the :class:`ffsolve.kit.Job` the function reads. Every
experiment job runs through the one script ``scripts/experiment_job.py``
(:func:`run_experiment_job`): rule ``<exp>_<step>`` runs the adapter
``ffsolve.experiments.<exp>.experiment.<step>_job`` (:func:`experiment_adapter`).
Failures are logged with their traceback and re-raised, so the job exits non-zero and Snakemake
removes the job's outputs; nothing is swallowed.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ffsolve.experiments import EXPERIMENTS
from ffsolve.kit.jobs import Job

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("ffsolve")


def setup_logging(log_path: Optional[str] = None, level: int = logging.INFO) -> None:
    """Send log records (and warnings, and stray prints to stderr) to ``log_path`` and stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


def compute_threads(smk) -> int:
    """The threads a job computes with: its ``threads``, or fewer where ``params.timing.threads``
    says so (timed jobs hold every core so that nothing runs beside them, but may compute on
    fewer)."""
    timing = getattr(smk.params, "timing", None) or {}
    wanted = timing.get("threads") if hasattr(timing, "get") else None
    return int(smk.threads) if not wanted else min(int(wanted), int(smk.threads))


def run_snakemake_job(smk, main: Callable[[Job], Any]) -> Any:
    """Run ``main(job)`` for the Snakemake ``script:`` object ``smk``, with logging and threads."""
    from ffsolve.runtime import limit_threads

    log_path = smk.log[0] if len(smk.log) else None
    setup_logging(log_path)
    threads = limit_threads(compute_threads(smk))
    job = Job(
        input=smk.input,
        output=smk.output,
        params=smk.params,
        threads=threads,
        wildcards=smk.wildcards,
        log_path=log_path,
    )
    start = time.perf_counter()
    log.info("rule %s, %d thread(s), wildcards %s", smk.rule, threads, dict(smk.wildcards.items()))
    try:
        result = main(job)
    except BaseException:
        log.exception("rule %s failed", smk.rule)
        raise
    log.info("rule %s finished in %.1f s", smk.rule, time.perf_counter() - start)
    return result


def experiment_adapter(rule: str) -> Callable[[Job], Any]:
    """The adapter rule ``<exp>_<step>`` runs: ``ffsolve.experiments.<exp>.experiment.<step>_job``.

    ``<exp>`` is the longest name in :data:`ffsolve.experiments.EXPERIMENTS` that, with ``_``,
    begins the rule's name (``rnn_backprop_convergence``: ``rnn_backprop``, ``convergence_job``).
    A rule derived from another (``use rule <exp>_<step> as <exp>_<step>_<variant>``) runs the
    same adapter: where ``<step>_<variant>_job`` does not exist, the longest ``<step>`` (the rest
    of the name cut at an ``_``) with an adapter is taken. A rule that names no experiment, or
    none of whose steps has an adapter, raises :class:`LookupError` naming the rule and the
    adapter it looked for."""
    experiment = max((name for name in EXPERIMENTS if rule.startswith(f"{name}_")), key=len, default=None)
    if experiment is None:
        raise LookupError(
            f"rule {rule!r} runs scripts/experiment_job.py, but its name begins with no experiment of "
            f"ffsolve.experiments.EXPERIMENTS {list(EXPERIMENTS)}: name it <experiment>_<step>"
        )
    module_name = f"ffsolve.experiments.{experiment}.experiment"
    module = importlib.import_module(module_name)
    parts = rule[len(experiment) + 1:].split("_")
    steps = ["_".join(parts[:n]) for n in range(len(parts), 0, -1)]
    for step in steps:
        adapter = getattr(module, f"{step}_job", None)
        if callable(adapter):
            return adapter
    raise LookupError(
        f"rule {rule!r} runs {module_name}.{steps[0]}_job, which does not exist"
        + (f" (nor {', '.join(f'{s}_job' for s in steps[1:])})" if steps[1:] else "")
        + f": define {steps[0]}_job(job) in src/ffsolve/experiments/{experiment}/experiment.py, "
        "or name the rule after an adapter that exists"
    )


def run_experiment_job(smk) -> Any:
    """Run the experiment adapter of the rule ``smk.rule`` (:func:`experiment_adapter`) as a job:
    a missing adapter is logged into the rule's log and raised, like any failure."""
    return run_snakemake_job(smk, lambda job: experiment_adapter(smk.rule)(job))
