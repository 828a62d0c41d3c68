"""Snakemake entry point: PixelCNN++ sample (logic in ffsolve.experiments.pixelcnnpp)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.experiments import pixelcnnpp
from ffsolve.jobs import run_snakemake_job

run_snakemake_job(snakemake, pixelcnnpp.sample)  # noqa: F821 - injected by Snakemake's script:
