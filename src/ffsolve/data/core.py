"""The dataset record and its on-disk form."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(RuntimeError):
    """Data is missing or corrupt; the message says where it looked and what to do."""


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 ``(N, H, W)`` (grey) or ``(N, H, W, C)`` (colour), labels as int64 ``(N,)``."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __post_init__(self):
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise DataError(
                    f"{self.name} {split} images must be uint8 (N, H, W[, C]), "
                    f"got {images.dtype} {images.shape}"
                )
            if len(images) != len(labels):
                raise DataError(
                    f"{self.name} {split}: {len(images)} images but {len(labels)} labels"
                )


def save_prepared(dataset: Dataset, path: str | os.PathLike) -> None:
    from ffsolve.kit.io import write_npz

    arrays = {"name": dataset.name, "source": dataset.source}
    for split in ("train", "test"):
        arrays[f"{split}_images"] = getattr(dataset, f"{split}_images")
        arrays[f"{split}_labels"] = getattr(dataset, f"{split}_labels")
    # Uncompressed: every job that trains reads it, and images compress to little gain in time.
    write_npz(path, arrays, compress=False)


def load_prepared(path: str | os.PathLike) -> Dataset:
    """Read a dataset written by the ``data_prepare`` rule."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"prepared dataset {path} does not exist; run `snakemake --cores 1 {path}` "
            "to prepare it from the source named in the config's data section"
        )
    with np.load(path) as arrays:
        return Dataset(
            name=str(arrays["name"]),
            source=str(arrays["source"]),
            train_images=arrays["train_images"],
            train_labels=arrays["train_labels"].astype(np.int64),
            test_images=arrays["test_images"],
            test_labels=arrays["test_labels"].astype(np.int64),
        )
