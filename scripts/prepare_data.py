"""Snakemake entry point: prepare one dataset as resources/data/<name>.npz."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.data.prepare import prepare
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, prepare)  # noqa: F821 - injected by Snakemake's script:
