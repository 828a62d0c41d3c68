"""Snakemake entry point: every solver_demo method in one timed process (ffsolve.experiments.solver_demo)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments.solver_demo.experiment import measure_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, measure_job)  # noqa: F821 - injected by Snakemake's script:
