"""Snakemake entry point: one method of the solver demo (logic in ffsolve.experiments)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments import solver_demo
from ffsolve.jobs import run_snakemake_job

run_snakemake_job(snakemake, solver_demo.run)  # noqa: F821 - injected by Snakemake's script:
