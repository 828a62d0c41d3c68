"""Snakemake entry point: the stamped results page (results/results.md) and its stamp."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.workflow.jobs import run_snakemake_job
from ffsolve.workflow.results_page import write_page, write_stamp


def _write(job):
    write_stamp(job.input.summary, job.params.config, job.params.configfiles, job.output.stamp)
    write_page(job.input.summary, job.input.paper, job.output.stamp, job.output.page)


run_snakemake_job(snakemake, _write)  # noqa: F821 - injected by Snakemake's script:
