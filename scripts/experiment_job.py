"""Snakemake entry point of every experiment job: rule ``<exp>_<step>`` runs
``ffsolve.experiments.<exp>.experiment.<step>_job`` (``made_measure``: made's ``measure_job``;
``rnn_backprop_convergence``: rnn_backprop's ``convergence_job``), and stops naming the rule and
the adapter where that does not exist (ffsolve.workflow.jobs.experiment_adapter)."""

import _ffsolve_path  # noqa: F401  (first: threads, and src/ importable under conda)
from ffsolve.workflow.jobs import run_experiment_job

run_experiment_job(snakemake)  # noqa: F821 - injected by Snakemake's script:
