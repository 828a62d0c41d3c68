"""Snakemake entry point: sample MADE with one method (logic in ffsolve.experiments.made)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments import made
from ffsolve.jobs import run_snakemake_job

run_snakemake_job(snakemake, made.run)  # noqa: F821 - injected by Snakemake's script:
