"""Snakemake entry point: every densenet method on one dataset in one timed process
(ffsolve.experiments.densenet.experiment)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments.densenet.experiment import measure_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, measure_job)  # noqa: F821 - injected by Snakemake's script:
