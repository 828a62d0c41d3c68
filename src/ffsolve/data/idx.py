"""Reading MNIST's IDX files (plain or gzipped) with NumPy, checking their headers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ffsolve.data.core import DataError

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def read_idx(path: str | Path, expect_images: bool) -> np.ndarray:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}. Delete it and prepare the data again.") from err
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    expected = _IMAGES_MAGIC if expect_images else _LABELS_MAGIC
    if magic != expected:
        raise DataError(
            f"{path} is not an MNIST {'image' if expect_images else 'label'} file "
            f"(magic number {magic}, expected {expected}); the file is corrupt or misnamed"
        )
    dims = 3 if expect_images else 1
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    offset = 4 + 4 * dims
    body = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if body.size != int(np.prod(shape)):
        raise DataError(
            f"{path} is truncated or corrupt: header says {shape}, found {body.size} bytes of data"
        )
    return body.reshape(shape).copy()
