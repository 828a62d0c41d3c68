"""Snakemake entry point: DenseNet solve (logic in ffsolve.experiments.densenet)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments import densenet
from ffsolve.jobs import run_snakemake_job

run_snakemake_job(snakemake, densenet.solve)  # noqa: F821 - injected by Snakemake's script:
