"""Atomic writes: every file a job produces appears whole or not at all.

A job that dies half-way leaves only a ``*.tmp`` file, which no rule reads, so a later run can never
mistake a torn result for a finished one. Every writer in the package goes through this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (creating parents)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Pretty, key-sorted JSON; NaN and infinity are refused rather than written as non-JSON."""
    return write_text(path, json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any], compress: bool = True) -> Path:
    """``.npz`` of ``arrays`` (anything ``np.asarray`` takes), compressed unless told otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez appends ".npz" to names without it, so the temporary name must end in it.
    tmp = path.with_name(path.name + ".tmp.npz")
    save = np.savez_compressed if compress else np.savez
    save(tmp, **{name: np.asarray(value) for name, value in arrays.items()})
    os.replace(tmp, path)
    return path
