"""Snakemake entry point: every rnn_backprop backward method in one timed process (ffsolve.experiments.rnn_backprop)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments.rnn_backprop.experiment import measure_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, measure_job)  # noqa: F821 - injected by Snakemake's script:
