"""Snakemake entry point: train the small DenseNet-BC on MNIST (ffsolve.experiments.densenet.experiment)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments.densenet.experiment import train_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, train_job)  # noqa: F821 - injected by Snakemake's script:
