"""Data loading (DESIGN.md §5): the splits each source gives, and errors that name the path.

Corrupt/missing MNIST files are covered in test_bad_input.py; these add the split contracts,
CIFAR-10's folder layout and the prepared-file round trip.
"""

import pickle

import numpy as np
import pytest

from ffsolve.data import DataError, Dataset, load_dataset, load_prepared, save_prepared
from ffsolve.data.digits import load_digits_dataset, load_photo_patches
from ffsolve.data.sources import EMBEDDED_MNIST_IN_REPO
from workflow_helpers import REPO

EMBEDDED = REPO / EMBEDDED_MNIST_IN_REPO


def test_embedded_mnist_splits_9000_1000_deterministically():
    first, second = load_dataset("mnist", "embedded", embedded_dir=EMBEDDED), load_dataset("mnist", "embedded", embedded_dir=EMBEDDED)
    assert first.train_images.shape == (9000, 28, 28) and first.test_images.shape == (1000, 28, 28)
    assert first.train_images.dtype == np.uint8 and first.train_labels.dtype == np.int64
    assert set(np.unique(first.test_labels)) == set(range(10))
    np.testing.assert_array_equal(first.test_images, second.test_images)


def test_full_mnist_from_the_shared_folder(shared_mnist_root):
    data = load_dataset("mnist", "folder", str(shared_mnist_root))
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    # The embedded copy is MNIST's test split: the first 9,000 test images, byte for byte.
    embedded = load_dataset("mnist", "embedded", embedded_dir=EMBEDDED)
    np.testing.assert_array_equal(embedded.train_images, data.test_images[:9000])


def test_the_embedded_source_needs_its_folder_named():
    # The library never guesses the repository from its own install location.
    with pytest.raises(ValueError, match="embedded_dir is required"):
        load_dataset("mnist", "embedded")


def test_unknown_dataset_and_source_are_refused():
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", "folder", "x")
    with pytest.raises(DataError, match=r"data.cifar10.source must be one of \['download', 'folder'\]"):
        load_dataset("cifar10", "embedded")


def _cifar_batch(path, count, seed):
    rng = np.random.default_rng(seed)
    entry = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             "labels": rng.integers(0, 10, count).tolist()}
    path.write_bytes(pickle.dumps(entry))
    return entry


def test_cifar10_folder_layout_is_read_channel_last(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    entries = [_cifar_batch(batches / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    _cifar_batch(batches / "test_batch", 3, 9)
    data = load_dataset("cifar10", "folder", str(tmp_path))
    assert data.train_images.shape == (20, 32, 32, 3) and data.test_images.shape == (3, 32, 32, 3)
    # CIFAR's rows are 1024 red, 1024 green, 1024 blue values.
    np.testing.assert_array_equal(data.train_images[0, :, :, 1].ravel(), entries[0]["data"][0, 1024:2048])


def test_cifar10_missing_or_corrupt_batches_name_the_path(tmp_path):
    with pytest.raises(DataError, match=f"no CIFAR-10 folder at {tmp_path}/cifar-10-batches-py"):
        load_dataset("cifar10", "folder", str(tmp_path))
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        load_dataset("cifar10", "folder", str(tmp_path))
    (batches / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_1 is corrupt"):
        load_dataset("cifar10", "folder", str(tmp_path))


def test_prepared_round_trip_and_missing_file_message(tmp_path):
    data = load_digits_dataset()
    save_prepared(data, tmp_path / "digits.npz")
    back = load_prepared(tmp_path / "digits.npz")
    assert back.name == "digits" and back.source == "sklearn"
    np.testing.assert_array_equal(back.train_images, data.train_images)
    with pytest.raises(DataError, match=r"nothing.npz does not exist; run `snakemake"):
        load_prepared(tmp_path / "nothing.npz")


def test_stand_ins_for_tests():
    digits = load_digits_dataset()
    assert digits.train_images.shape[1:] == (8, 8) and digits.train_images.max() == 255
    assert len(digits.train_images) + len(digits.test_images) == 1797
    patches = load_photo_patches(count=5)
    assert patches.shape == (5, 8, 8, 3) and patches.dtype == np.uint8


def test_dataset_record_refuses_bad_arrays():
    with pytest.raises(DataError, match="must be uint8"):
        Dataset("x", np.zeros((2, 4, 4)), np.zeros(2), np.zeros((1, 4, 4), np.uint8), np.zeros(1), "t")
    with pytest.raises(DataError, match="2 images but 3 labels"):
        Dataset("x", np.zeros((2, 4, 4), np.uint8), np.zeros(3), np.zeros((1, 4, 4), np.uint8), np.zeros(1), "t")
