"""Snakemake entry point: every sampler of ffsolve.sample_autoregressive on one model, in one
timed process (ffsolve.experiments.speculative.experiment)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)

from ffsolve.experiments.speculative.experiment import measure_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, measure_job)  # noqa: F821 - injected by Snakemake's script:
