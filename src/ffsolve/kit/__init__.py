"""The shared kit every experiment uses: atomic files, seed streams, run names, typed settings,
the results record and the measurement harness. Experiments import from here, never from each
other."""

from ffsolve.kit.harness import Candidate, Measurement, RunContext, Tolerance, measure, record, write_runs
from ffsolve.kit.io import read_json, write_json, write_npz, write_text
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
from ffsolve.kit.settings import SettingsError, settings_from

__all__ = [
    "Candidate", "Measurement", "RunContext", "Tolerance", "measure", "record", "write_runs",
    "read_json", "write_json", "write_npz", "write_text",
    "METRICS_SCHEMA", "STOP_REASONS", "RecordError", "gather_summary", "read_metrics", "read_summary",
    "validate_record", "write_metrics",
    "RunSpec", "expand_runs", "parse_run_name", "run_name", "run_names",
    "jax_key", "numpy_rng", "seed_stream", "torch_generator",
    "SettingsError", "settings_from",
]
