"""Shared test settings: quiet progress bars, one thread, the repository root."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("FFSOLVE_PROGRESS", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

REPO = Path(__file__).resolve().parents[1]
# The full MNIST (torchvision layout) next to the checkout on the dev machines; elsewhere point
# FFSOLVE_MNIST_ROOT at a folder that contains MNIST/raw/.
SHARED_MNIST = Path(os.environ.get("FFSOLVE_MNIST_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_mnist_root() -> Path:
    """The full MNIST in ../shared/data (torchvision layout), or a skip saying why."""
    if not (SHARED_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"full MNIST not found at {SHARED_MNIST}/MNIST/raw (set FFSOLVE_MNIST_ROOT)")
    return SHARED_MNIST
