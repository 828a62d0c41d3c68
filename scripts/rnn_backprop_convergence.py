"""Snakemake entry point: RNN backprop convergence (logic in ffsolve.experiments.rnn_backprop)."""

import os

# Before torch loads OpenMP, which reads this only once: spinning worker threads turn a 2-thread
# job's hundreds of tiny matmuls per step into 5-30x slower ones when another process holds a
# core (measured here). ffsolve.runtime.limit_threads sets it too, but after torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import _ffsolve_path  # noqa: E402,F401  (makes src/ importable under conda)
from ffsolve.experiments import rnn_backprop  # noqa: E402
from ffsolve.jobs import run_snakemake_job  # noqa: E402

run_snakemake_job(snakemake, rnn_backprop.convergence)  # noqa: F821 - injected by Snakemake's script:
