"""The results contract of DESIGN.md §6: one ``metrics.json`` per solver run, one summary CSV.

Files are written to a temporary name and renamed into place, so a failed job never leaves a
half-written result that a later run could mistake for a finished one.
"""

from __future__ import annotations

import csv
import json
import math
import os
from importlib import metadata
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

REQUIRED_FIELDS = (
    "experiment",
    "dataset",
    "method",
    "block_size",
    "tol",
    "sequence_length",
    "iterations",
    "wall_time_s",
    "max_abs_diff_vs_sequential",
    "exact_match",
    "device",
    "seed",
)
TRACKED_PACKAGES = ("ffsolve", "numpy", "torch", "jax", "flax", "optax", "snakemake")
SUMMARY_COLUMNS = ("experiment", "dataset", "run") + REQUIRED_FIELDS[2:] + (
    "converged", "wall_time_iqr_s", "timing_repeats", "metrics_path"
)


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"not installed"`` for those missing)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_metrics(path: str | os.PathLike, record: Mapping) -> dict:
    """Write one run's metrics; refuses a record that lacks any field of the contract."""
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise ValueError(f"metrics record for {path} lacks required fields: {missing}")
    full = {**record, "versions": {**package_versions(), **record.get("versions", {})}}
    text = json.dumps(_jsonable(full), indent=2, sort_keys=True, allow_nan=False)
    _write_atomically(Path(path), text.encode())
    return full


def read_metrics(path: str | os.PathLike) -> dict:
    with open(path) as handle:
        return json.load(handle)


def write_trace(path: str | os.PathLike, **arrays) -> None:
    """Save per-iteration arrays for plots (``trace.npz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


def gather_summary(metrics_paths: Iterable[str | os.PathLike], out_csv: str | os.PathLike) -> int:
    """Gather metrics files into one CSV, one row per run, sorted; returns the row count."""
    rows = []
    for path in metrics_paths:
        record = read_metrics(path)
        row = {key: record.get(key, "") for key in SUMMARY_COLUMNS}
        # The run is the results folder: results/<experiment>/<dataset>/<run>/metrics.json.
        row["run"] = record.get("run") or Path(path).parent.name
        timing = record.get("timing") or {}
        row["wall_time_iqr_s"] = timing.get("iqr_s", "")
        row["timing_repeats"] = timing.get("repeats", "")
        row["metrics_path"] = str(path)
        rows.append(row)
    rows.sort(key=lambda r: (str(r["experiment"]), str(r["dataset"]), str(r["run"])))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_csv)
    return len(rows)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _jsonable(value):
    """Plain JSON types from NumPy/PyTorch scalars; NaN and infinity are refused, not hidden."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        if not math.isfinite(float(value)):
            raise ValueError(f"metrics value {value!r} is not finite")
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # torch / jax scalars
        return _jsonable(value.item())
    return value
