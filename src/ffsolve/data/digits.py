"""Small stand-ins that ship with scikit-learn, for tests: 8×8 digits and 8×8 RGB photo patches."""

from __future__ import annotations

import numpy as np

from ffsolve.data.core import Dataset


def load_digits_dataset(test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1,797 8×8 digits (17 grey levels) scaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    cut = int(round(len(images) * (1 - test_fraction)))
    return Dataset("digits", images[:cut], labels[:cut], images[cut:], labels[cut:], "sklearn")


def load_photo_patches(count: int = 512, size: int = 8, seed: int = 0) -> np.ndarray:
    """``count`` random ``size``×``size`` RGB patches (uint8) cut from scikit-learn's two photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    patches = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size + 1)
        left = rng.integers(photo.shape[1] - size + 1)
        patches[i] = photo[top: top + size, left: left + size]
    return patches
