"""Running library code as a Snakemake job: logging into the rule's log, threads, progress, errors.

Every script in ``scripts/`` is two lines: import an experiment function and hand it to
:func:`run_snakemake_job`, which builds the :class:`ffsolve.kit.Job` the experiment reads.
Failures are logged with their traceback and re-raised, so the job exits non-zero and Snakemake
removes the job's outputs; nothing is swallowed.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

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
