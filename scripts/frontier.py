"""Snakemake entry point: the speed/error frontier (figures/frontier.png and .pdf)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)

from ffsolve.workflow.jobs import run_snakemake_job
from ffsolve.workflow.figures import write_frontier

run_snakemake_job(
    snakemake,  # noqa: F821 - injected by Snakemake's script:
    lambda job: write_frontier(job.input.summary, job.output.png, job.output.pdf),
)
