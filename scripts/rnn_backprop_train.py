"""Snakemake entry point: RNN backprop train (logic in ffsolve.experiments.rnn_backprop)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments import rnn_backprop
from ffsolve.jobs import run_snakemake_job

run_snakemake_job(snakemake, rnn_backprop.train)  # noqa: F821 - injected by Snakemake's script:
