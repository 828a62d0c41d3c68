"""Snakemake entry point: our speedups beside the paper's (figures/speedups.md and figure)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.workflow.jobs import run_snakemake_job
from ffsolve.workflow.figures import write_speedups

run_snakemake_job(
    snakemake,  # noqa: F821 - injected by Snakemake's script:
    lambda job: write_speedups(
        job.input.summary, job.input.paper, job.output.table, job.output.png, job.output.pdf
    ),
)
