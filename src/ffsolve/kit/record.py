"""The results contract (DESIGN.md §6): one record per run, one schema for every experiment.

Every run writes ``results/<experiment>/<dataset>/<run>/metrics.json``; :data:`METRICS_SCHEMA` is
the one JSON schema they all satisfy, checked on write (:func:`write_metrics`) and in the tests.
The words are fixed here:

* ``iterations``: parallel steps (calls of the map, or of a fast path's batched step); never more
  than ``sequence_length``.
* ``network_evaluations``: work done, in full-network-pass equivalents (positions computed divided
  by positions in one full pass), so cached, windowed and batched paths compare with plain ones.
* ``bitwise_equal``: the timed program's output equals the sequential reference bit for bit.
  ``exact`` means this and nothing else.
* ``within_tolerance``: only where bitwise equality cannot hold (a path that computes the same
  numbers with other shapes or another summation order); then ``tolerance`` states the rule and
  why. Otherwise both are null. True only for a converged run: a run that was truncated or
  stopped early is inexact, whatever its distance (:func:`validate_record` refuses the rest).
* ``stopped_by``: what stopped the run, one of :data:`STOP_REASONS`.
* ``timing``: seconds per call; ``median_s`` over every timed sample, and its spread:
  ``spread: "iqr"`` with ``iqr_s`` from five repeats on, ``spread: "min-max"`` (``iqr_s`` null,
  ``min_s``/``max_s`` the spread) below five.
* ``quantity`` (optional): what the timed program computes when it is not one solve of the
  system, e.g. ``train_200_steps`` or ``time_to_top5``; absent means ``solve``. Speedups and the
  paper's rows are only matched within one quantity.
* ``top5_match_fraction`` (optional): a run stopped by a top-5 rule is judged by its top-5 lists
  (the fraction of images whose top-5 equals the reference's), not by a logit tolerance.
"""

from __future__ import annotations

import csv
import io
import os
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

import jsonschema

from ffsolve.kit.io import read_json, write_json, write_text

TRACKED_PACKAGES = ("ffsolve", "numpy", "torch", "jax", "flax", "optax", "snakemake")

STOP_REASONS = {
    "fixed_point": "a step changed nothing",
    "tolerance": "the change fell to the stopping tolerance (tol > 0)",
    "exact_prefix": "the step-count bound that makes the result exact (T steps, a scan's depth)",
    "budget": "a fixed step budget ran out (max_iters, a truncated run)",
    "early_stop": "an early-stop rule (DenseNet's top-5 stability)",
    "sequential": "a loop: each position computed once",
    "deadline": "a time limit cut the run",
}
"""The values of a record's ``stopped_by``, with their meaning."""
CUT_SHORT = ("budget", "early_stop", "deadline")
"""The stops of a run that did not converge (``converged`` false): it is inexact in every table."""

_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "minLength": 1}

METRICS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ffsolve run record (results/<experiment>/<dataset>/<run>/metrics.json)",
    "type": "object",
    "required": [
        "experiment", "dataset", "run", "method", "block_size", "tol", "sequence_length",
        "iterations", "network_evaluations", "converged", "stopped_by", "bitwise_equal", "max_abs_diff",
        "tolerance", "within_tolerance", "wall_time_s", "timing", "batch", "device", "seed",
        "threads", "versions", "reference",
    ],
    "properties": {
        "experiment": _NAME,
        "dataset": _NAME,
        "run": _NAME,
        "method": _NAME,
        "quantity": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "block_size": {"type": ["integer", "null"], "minimum": 1},
        "budget": {"type": ["integer", "null"], "minimum": 1},
        "tol": {"type": "number", "minimum": 0},
        "sequence_length": {"type": "integer", "minimum": 1},
        "iterations": _COUNT,
        "network_evaluations": {"type": "number", "minimum": 0},
        "converged": {"type": "boolean"},
        "stopped_by": {"enum": list(STOP_REASONS)},
        "bitwise_equal": {"type": "boolean"},
        "max_abs_diff": {"type": "number", "minimum": 0},
        "tolerance": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["atol", "rtol", "rule", "why"],
                    "additionalProperties": False,
                    "properties": {
                        "atol": {"type": "number", "minimum": 0},
                        "rtol": {"type": "number", "minimum": 0},
                        "rule": _NAME,
                        "why": _NAME,
                    },
                },
            ]
        },
        "within_tolerance": {"type": ["boolean", "null"]},
        "top5_match_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "wall_time_s": {"type": "number", "exclusiveMinimum": 0},
        "timing": {
            "type": "object",
            "required": ["median_s", "iqr_s", "min_s", "max_s", "spread", "repeats", "warmup",
                         "times_s", "session"],
            "properties": {
                "median_s": _NUMBER, "iqr_s": {"type": ["number", "null"]}, "min_s": _NUMBER,
                "max_s": _NUMBER, "spread": {"enum": ["iqr", "min-max"]},
                "repeats": {"type": "integer", "minimum": 1}, "warmup": _COUNT,
                "times_s": {"type": "array", "items": _NUMBER, "minItems": 1},
                "calls_per_repeat": {"type": "integer", "minimum": 1},
                "calls_per_sample": {"type": "integer", "minimum": 1},
                "calibration_s": {"type": ["number", "null"]},
                "interleaved_with": {"type": "array", "items": _NAME},
                "session": _NAME,
            },
        },
        "batch": {"type": "integer", "minimum": 1},
        "device": _NAME,
        "seed": {"type": "integer"},
        "threads": {"type": "integer", "minimum": 1},
        "reference": _NAME,
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

SUMMARY_COLUMNS = (
    "experiment", "dataset", "run", "method", "quantity", "block_size", "budget", "tol",
    "sequence_length", "iterations", "network_evaluations", "converged", "stopped_by", "bitwise_equal",
    "within_tolerance", "tolerance_rule", "guarantee", "top5_match_fraction", "max_abs_diff", "wall_time_s",
    "wall_time_spread", "wall_time_iqr_s", "wall_time_min_s", "wall_time_max_s", "timing_repeats",
    "reference", "timing_session", "batch", "device", "auto_chosen", "auto_first_call_s",
    "metrics_path",
)


class RecordError(ValueError):
    """A run record breaks the results contract; the message says which field and how."""


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` for those missing)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def validate_record(record: Mapping, where: str = "record") -> None:
    """Check ``record`` against :data:`METRICS_SCHEMA` and the rules a schema cannot say."""
    try:
        jsonschema.validate(record, METRICS_SCHEMA)
    except jsonschema.ValidationError as err:
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise RecordError(f"{where}: field {field}: {err.message}") from None
    if record["iterations"] > record["sequence_length"]:
        raise RecordError(
            f"{where}: {record['iterations']} iterations exceed the sequence length "
            f"{record['sequence_length']} (a solver bug: the triangular bound is T)"
        )
    if record["bitwise_equal"] and record["max_abs_diff"] != 0:
        raise RecordError(f"{where}: bitwise_equal is true but max_abs_diff is {record['max_abs_diff']}")
    if (record["tolerance"] is None) != (record["within_tolerance"] is None):
        raise RecordError(f"{where}: within_tolerance and tolerance must be given together, or neither")
    if record["within_tolerance"] and not record["converged"]:
        raise RecordError(
            f"{where}: run {record['run']!r} did not converge (stopped by {record['stopped_by']}) "
            "but says within_tolerance: a truncated or stopped-early run is inexact"
        )
    if (record["stopped_by"] in CUT_SHORT) == record["converged"] and (
            record["converged"] or record["stopped_by"] in ("fixed_point", "tolerance")):
        raise RecordError(
            f"{where}: run {record['run']!r} says converged={record['converged']} but stopped_by "
            f"{record['stopped_by']!r}: a run cut short ({', '.join(CUT_SHORT)}) has not converged, "
            "and one stopped by a fixed point or its tolerance has"
        )
    if record["wall_time_s"] != record["timing"]["median_s"]:
        raise RecordError(f"{where}: wall_time_s must be the median of the timed repeats")
    timing = record["timing"]
    if (timing["spread"] == "iqr") != (timing["iqr_s"] is not None) or (
            timing["spread"] == "iqr" and timing["repeats"] < 5):
        raise RecordError(
            f"{where}: timing spread {timing['spread']!r} with iqr_s {timing['iqr_s']!r} from "
            f"{timing['repeats']} repeats: an IQR needs five repeats or more, below that the spread "
            "is min-max and iqr_s is null"
        )


def write_metrics(path: str | os.PathLike, record: Mapping) -> dict:
    """Validate and write one run's record (package versions added); returns what was written."""
    full = {**record, "versions": {**package_versions(), **dict(record.get("versions", {}))}}
    validate_record(full, str(path))
    write_json(path, full)
    return full


def read_metrics(path: str | os.PathLike) -> dict:
    return read_json(path)


def summary_row(record: Mapping, path: str | os.PathLike) -> dict:
    tolerance = record.get("tolerance") or {}
    row = {key: record.get(key, "") for key in SUMMARY_COLUMNS}
    row.update(
        quantity=record.get("quantity") or "solve",
        tolerance_rule=tolerance.get("rule", ""),
        within_tolerance="" if record.get("within_tolerance") is None else record["within_tolerance"],
        block_size="" if record.get("block_size") is None else record["block_size"],
        budget="" if record.get("budget") is None else record["budget"],
        wall_time_spread=record["timing"]["spread"],
        wall_time_iqr_s="" if record["timing"]["iqr_s"] is None else record["timing"]["iqr_s"],
        wall_time_min_s=record["timing"]["min_s"],
        wall_time_max_s=record["timing"]["max_s"],
        top5_match_fraction="" if record.get("top5_match_fraction") is None else record["top5_match_fraction"],
        timing_repeats=record["timing"]["repeats"],
        timing_session=record["timing"]["session"],
        # an auto run: the run it chose, and its first call's time (pilot included) beside the
        # steady state (wall_time_s)
        auto_chosen=(record.get("auto") or {}).get("chosen", ""),
        auto_first_call_s=(record.get("auto") or {}).get("first_call_s", ""),
        metrics_path=str(path),
    )
    return row


def gather_summary(metrics_paths: Iterable[str | os.PathLike], out_csv: str | os.PathLike) -> int:
    """Validate every record and gather them into one CSV, one row per run; returns the count."""
    rows = []
    for path in metrics_paths:
        record = read_metrics(path)
        validate_record(record, str(path))
        rows.append(summary_row(record, path))
    rows.sort(key=lambda r: (str(r["experiment"]), str(r["dataset"]), str(r["run"])))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_csv, buffer.getvalue())
    return len(rows)


def read_summary(path: str | os.PathLike) -> list[dict]:
    with open(Path(path), newline="") as handle:
        return list(csv.DictReader(handle))
