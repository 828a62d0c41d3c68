"""Snakemake entry point: rnn_backprop gradient-convergence traces, untimed (ffsolve.experiments.rnn_backprop)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)

from ffsolve.experiments.rnn_backprop.experiment import convergence_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, convergence_job)  # noqa: F821 - injected by Snakemake's script:
