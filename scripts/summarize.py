"""Snakemake entry point: gather every metrics.json into results/summary.csv."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.workflow.jobs import run_snakemake_job
from ffsolve.kit.record import gather_summary

run_snakemake_job(
    snakemake,  # noqa: F821 - injected by Snakemake's script:
    lambda job: gather_summary(list(job.input.metrics), job.output.summary),
)
