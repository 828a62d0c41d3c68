"""Snakemake entry point: every PixelCNN++ sampler in one timed process (ffsolve.experiments.pixelcnnpp)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments.pixelcnnpp.experiment import measure_job
from ffsolve.workflow.jobs import run_snakemake_job

run_snakemake_job(snakemake, measure_job)  # noqa: F821 - injected by Snakemake's script:
