"""Where each dataset comes from: ``embedded`` (MNIST only), ``download`` or ``folder``."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from ffsolve.data.core import DataError, Dataset
from ffsolve.data.idx import read_idx

log = logging.getLogger(__name__)

# Where the workflow ships the embedded MNIST, relative to the repository root. The library never
# guesses the repository from its own location (that breaks outside an editable install): callers
# pass the folder, e.g. the rule's inputs.
EMBEDDED_MNIST_IN_REPO = Path("workflow") / "resources" / "mnist"
# md5 of the gzipped files shipped in workflow/resources/mnist/ (unzipped: the official t10k md5s).
EMBEDDED_MD5 = {
    "t10k-images-idx3-ubyte.gz": "ecff87aa27c74fbc2c1f97e89c19221d",
    "t10k-labels-idx1-ubyte.gz": "a38049bc042dc6e683842a84160daae1",
}
EMBEDDED_TRAIN = 9000  # first 9,000 of MNIST's test split train, the last 1,000 test
SOURCES = {"mnist": ("embedded", "download", "folder"), "cifar10": ("download", "folder")}


def load_dataset(name: str, source: str, folder: Optional[str] = None,
                 download_root: Optional[str] = None, embedded_dir: Optional[Path] = None) -> Dataset:
    """Load ``name`` from ``source``.

    Args:
        name: ``mnist`` or ``cifar10``.
        source: ``embedded`` (MNIST's test split shipped with the workflow), ``download``
            (torchvision's downloader, checksums verified) or ``folder`` (torchvision's layout).
        folder: the folder for ``source: folder``: the one *containing* ``MNIST/raw/`` or
            ``cifar-10-batches-py/``.
        download_root: where ``download`` puts the raw files.
        embedded_dir: where the shipped MNIST files are (default: this checkout's
            ``workflow/resources/mnist``).
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}")
    if source not in SOURCES[name]:
        raise DataError(f"data.{name}.source must be one of {list(SOURCES[name])}, got {source!r}")
    if source == "folder" and not folder:
        raise DataError(f"data.{name}.source is folder but data.{name}.folder is not set")
    if name == "mnist":
        if source == "embedded":
            if embedded_dir is None:
                raise ValueError(
                    "embedded_dir is required for source 'embedded': the folder of the shipped "
                    f"MNIST files ({EMBEDDED_MNIST_IN_REPO} in the repository)"
                )
            return _mnist_embedded(Path(embedded_dir))
        root = Path(folder) if source == "folder" else Path(download_root or "resources/raw")
        if source == "download":
            _torchvision_download("MNIST", root)
        return _mnist_folder(root, source)
    root = Path(folder) if source == "folder" else Path(download_root or "resources/raw")
    if source == "download":
        _torchvision_download("CIFAR10", root)
    return _cifar10_folder(root, source)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _mnist_embedded(directory: Path) -> Dataset:
    paths = {name: directory / name for name in EMBEDDED_MD5}
    for name, path in paths.items():
        if not path.exists():
            raise DataError(
                f"embedded MNIST file {path} is missing; it ships with the repository "
                "(git checkout -- workflow/resources/mnist)"
            )
        if _md5(path) != EMBEDDED_MD5[name]:
            raise DataError(
                f"embedded MNIST file {path} is corrupt (md5 mismatch); restore it with "
                "git checkout -- workflow/resources/mnist"
            )
    images = read_idx(paths["t10k-images-idx3-ubyte.gz"], expect_images=True)
    labels = read_idx(paths["t10k-labels-idx1-ubyte.gz"], expect_images=False)
    return Dataset(
        name="mnist",
        source="embedded",
        train_images=images[:EMBEDDED_TRAIN],
        train_labels=labels[:EMBEDDED_TRAIN].astype(np.int64),
        test_images=images[EMBEDDED_TRAIN:],
        test_labels=labels[EMBEDDED_TRAIN:].astype(np.int64),
    )


def _find(raw: Path, stem: str) -> Path:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataError(
        f"MNIST file {stem}[.gz] not found in {raw}. Put the four MNIST files there "
        "(torchvision layout <folder>/MNIST/raw/), or set data.mnist.source to embedded or download"
    )


def _mnist_folder(root: Path, source: str) -> Dataset:
    raw = root / "MNIST" / "raw"
    if not raw.is_dir():
        raise DataError(
            f"no MNIST folder at {raw}. data.mnist.folder must name the folder that contains "
            "MNIST/raw/ (torchvision's layout); or set data.mnist.source to embedded"
        )
    split = {}
    for prefix, split_name in (("train", "train"), ("t10k", "test")):
        split[f"{split_name}_images"] = read_idx(_find(raw, f"{prefix}-images-idx3-ubyte"), True)
        split[f"{split_name}_labels"] = read_idx(
            _find(raw, f"{prefix}-labels-idx1-ubyte"), False
        ).astype(np.int64)
    return Dataset(name="mnist", source=source, **split)


def _cifar10_folder(root: Path, source: str) -> Dataset:
    batches = root / "cifar-10-batches-py"
    if not batches.is_dir():
        raise DataError(
            f"no CIFAR-10 folder at {batches}. data.cifar10.folder must name the folder that "
            "contains cifar-10-batches-py/ (the python version of CIFAR-10, torchvision's layout)"
        )

    def read(names):
        images, labels = [], []
        for name in names:
            path = batches / name
            if not path.exists():
                raise DataError(f"CIFAR-10 batch {path} is missing")
            try:
                with open(path, "rb") as handle:
                    entry = pickle.load(handle, encoding="latin1")
            except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
                raise DataError(f"CIFAR-10 batch {path} is corrupt: {err}") from err
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        return np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.asarray(labels, np.int64)

    train_images, train_labels = read([f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = read(["test_batch"])
    return Dataset("cifar10", train_images, train_labels, test_images, test_labels, source)


def _torchvision_download(dataset: str, root: Path) -> None:
    """Fetch with torchvision, which verifies each file's md5; clear message when offline."""
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s with torchvision (md5 verified)", dataset, root)
    try:
        for train in (True, False):
            getattr(torchvision.datasets, dataset)(root=str(root), train=train, download=True)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do instead
        raise DataError(
            f"downloading {dataset} into {root} failed ({type(err).__name__}: {err}). "
            "Without network, use data.<name>.source: folder with a local copy"
            + (", or data.mnist.source: embedded" if dataset == "MNIST" else "")
        ) from err
