"""The shared kit every experiment uses, and its one public face: experiments import from
``ffsolve.kit`` only (never a submodule, never a private name; ``tests/test_imports.py``).

What it holds: atomic files (``io``), named seed streams (``seeds``), run names (``runs``), typed
settings (``settings``), the one results record (``record``), the measurement harness
(``harness``) with ``auto`` (``auto``) and the measure job's tail (``jobs``:
:func:`measure_and_write`), what a job hands an experiment (:class:`Job`), the tables and labels
(``tables``), the frontier (``frontier``), the figure building blocks (``plots``, with
matplotlib: loaded on first use of one of its names, so a job that draws nothing never imports
it), and the run-time helpers (device, seeds, deadlines) experiments share with the solvers.
Experiments import from here, never from each other; nothing here imports an experiment or the
workflow.
"""

from ffsolve.deadline import hard_part, passed
from ffsolve.kit.auto import (
    AUTO,
    AutoSettings,
    add_auto,
    auto_candidate,
    auto_settings,
    loop_pilot,
    pilot_steps,
    split_auto,
)
from ffsolve.kit.frontier import frontier_panels
from ffsolve.kit.harness import (
    Candidate,
    Measurement,
    RunContext,
    TimingSettings,
    Tolerance,
    bitwise_equal,
    measure,
    record,
    stop_reason,
    to_numpy_leaves,
    write_runs,
)
from ffsolve.kit.io import read_json, write_bytes, write_json, write_npz, write_text
from ffsolve.kit.jobs import Job, measure_and_write, measure_arguments, outputs_by_run, progress
from ffsolve.kit.record import (
    METRICS_SCHEMA,
    STOP_REASONS,
    RecordError,
    gather_summary,
    read_metrics,
    read_summary,
    validate_record,
    write_metrics,
)
from ffsolve.kit.runs import RunSpec, expand_runs, parse_run_name, run_name, run_names
from ffsolve.kit.seeds import jax_key, numpy_rng, seed_stream, torch_generator
from ffsolve.kit.settings import CheckpointError, SettingsError, settings_from
from ffsolve.kit.tables import auto_text, label, runs_table, speedup, time_text, within_text
from ffsolve.runtime import device_description, jax_device, seed_everything, torch_device
from ffsolve.solvers import uses_blocks

# The figure building blocks (ffsolve.kit.plots) import matplotlib: loaded on first use.
PLOTS = ("plots", "plt", "LOG_FLOOR", "plot_band", "load_runs", "save", "convergence_figure",
         "speedups_figure", "frontier_figure")

__all__ = [
    "hard_part", "passed",
    "AUTO", "AutoSettings", "add_auto", "auto_candidate", "auto_settings", "loop_pilot", "pilot_steps",
    "split_auto",
    "frontier_panels",
    "Candidate", "Measurement", "RunContext", "TimingSettings", "Tolerance", "bitwise_equal", "measure",
    "record", "stop_reason", "to_numpy_leaves", "write_runs",
    "read_json", "write_bytes", "write_json", "write_npz", "write_text",
    "Job", "measure_and_write", "measure_arguments", "outputs_by_run", "progress",
    "METRICS_SCHEMA", "STOP_REASONS", "RecordError", "gather_summary", "read_metrics", "read_summary",
    "validate_record", "write_metrics",
    "RunSpec", "expand_runs", "parse_run_name", "run_name", "run_names",
    "jax_key", "numpy_rng", "seed_stream", "torch_generator",
    "CheckpointError", "SettingsError", "settings_from",
    "auto_text", "label", "runs_table", "speedup", "time_text", "within_text",
    "device_description", "jax_device", "seed_everything", "torch_device",
    "uses_blocks",
    *PLOTS,
]


def __getattr__(name: str):
    if name in PLOTS:
        import importlib

        plots = importlib.import_module("ffsolve.kit.plots")
        return plots if name == "plots" else getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
