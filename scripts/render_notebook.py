"""Snakemake entry point: execute a figure notebook with papermill."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.workflow.jobs import run_snakemake_job
from ffsolve.workflow.notebooks import execute_notebook

run_snakemake_job(
    snakemake,  # noqa: F821 - injected by Snakemake's script:
    lambda job: execute_notebook(
        job.input.notebook, job.output.notebook, dict(job.params.parameters)
    ),
)
