"""Bad input stops the run with a message naming the problem and leaves no partial output.

config/README.md has the table of these cases; each row has a test here or in test_config.py.
"""

import gzip
import shutil

import pytest

from ffsolve.data import DataError, load_dataset
from workflow_helpers import copy_workflow, snakemake, write_config


def test_missing_data_folder_names_where_it_looked(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    missing = tmp_path / "nowhere"
    config = write_config(workdir, {"data": {"mnist": {"source": "folder", "folder": str(missing)}}})
    proc = snakemake(workdir, "--configfile", str(config), "--", "resources/data/mnist.npz", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"no MNIST folder at {missing}/MNIST/raw" in out
    assert not list(workdir.glob("resources/**/*.npz")), "a failed job left output behind"


def test_folder_source_without_folder_is_refused():
    with pytest.raises(DataError, match=r"data.mnist.folder is not set"):
        load_dataset("mnist", "folder", None)


@pytest.fixture
def mnist_folder(tmp_path, shared_mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(shared_mnist_root / "MNIST" / "raw" / name, raw / name)
    return tmp_path, raw


def test_truncated_file_is_reported_as_corrupt(mnist_folder, shared_mnist_root):
    root, raw = mnist_folder
    data = (shared_mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated or corrupt"):
        load_dataset("mnist", "folder", str(root))


def test_wrong_file_is_reported_by_its_magic_number(mnist_folder):
    root, raw = mnist_folder
    shutil.copy(raw / "t10k-labels-idx1-ubyte", raw / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match="not an MNIST image file"):
        load_dataset("mnist", "folder", str(root))


def test_gzipped_folder_files_are_read(mnist_folder, shared_mnist_root):
    root, raw = mnist_folder
    source = shared_mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with open(source, "rb") as plain, gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    data = load_dataset("mnist", "folder", str(root))
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)


def test_corrupt_embedded_copy_is_refused(tmp_path):
    workdir = copy_workflow(tmp_path)
    shipped = workdir / "workflow/resources/mnist/t10k-labels-idx1-ubyte.gz"
    shipped.write_bytes(shipped.read_bytes()[:-100])
    # The copy's own package is the one under test here: point the loader at the damaged copy.
    proc = snakemake(workdir, "resources/data/mnist.npz", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "is corrupt (md5 mismatch)" in out and "git checkout -- workflow/resources/mnist" in out
    assert not (workdir / "resources/data/mnist.npz").exists()


def test_offline_download_says_what_to_do_instead(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="use data.<name>.source: folder .* or data.mnist.source: embedded"):
        load_dataset("mnist", "download", download_root=str(tmp_path))


TINY_MADE = {
    "methods": ["sequential"],
    "hidden_sizes": [8],
    "train": {"steps": 3, "batch": 8, "eval_every": 3},
    "sample": {"batch": 2},
}


def test_checkpoint_of_the_wrong_shape_is_refused_naming_the_key(tmp_path):
    from ffsolve.experiments.made.model import MADE, save_checkpoint
    from workflow_helpers import only

    workdir = copy_workflow(tmp_path / "wf")
    checkpoint = tmp_path / "wrong.pt"
    save_checkpoint(MADE(784, [16, 16]), checkpoint, {"logit_lambda": 1e-6})
    made = {**TINY_MADE, "per_dataset": {"mnist": {"checkpoint": str(checkpoint)}}}
    config = write_config(workdir, {**only({"made": made}), "device": "cpu"})
    proc = snakemake(workdir, "--configfile", str(config), "--", "figures", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "made.hidden_sizes is [8]" in out, out[-3000:]
    assert not list(workdir.glob("results/made/**/metrics.json")), "a failed job left output behind"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_stops_the_job_and_leaves_nothing(tmp_path):
    from workflow_helpers import only

    workdir = copy_workflow(tmp_path)
    config = write_config(workdir, {**only({"made": TINY_MADE}), "device": "cuda"})
    proc = snakemake(workdir, "--configfile", str(config), "--", "results/made/mnist/model.pt",
                     check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "device: cuda was asked for, but PyTorch sees no CUDA GPU" in out
    assert not (workdir / "results/made/mnist/model.pt").exists()
