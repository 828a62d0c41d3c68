"""PixelCNN++ training: a few Adam steps lower the bits per dimension on 8×8 digits; checkpoints
round-trip and a mismatching one is refused with a message naming the keys."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import numpy as np
import pytest

from ffsolve.data.core import save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments import pixelcnnpp
from ffsolve.jobs import Job
from ffsolve.models.pixelcnnpp import PixelCNNPP
from ffsolve.models.pixelcnnpp_checkpoint import load_checkpoint

SETTINGS = {
    "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 3, "checkpoint": None,
    "sample_batch_size": 2, "block_rows": {"jacobi_gs": 1, "gs_jacobi": 2, "gs_jacobi_cache": 2},
    "train": {"steps": 12, "batch_size": 16, "learning_rate": 0.005, "lr_decay": 0.5,
              "eval_every": 6, "test_images": 32},
}


@pytest.mark.slow  # compiles a training step and an evaluation: ~20 s on two shared cores
def test_training_lowers_bits_per_dim_and_writes_a_loadable_checkpoint(tmp_path):
    data = load_digits_dataset()
    save_prepared(data, tmp_path / "digits.npz")
    job = Job(
        input=SimpleNamespace(data=str(tmp_path / "digits.npz")),
        output=SimpleNamespace(checkpoint=str(tmp_path / "model.msgpack"),
                               log_json=str(tmp_path / "train.json")),
        params=None, config={"seed": 3, "pixelcnnpp": {"settings": {"digits": SETTINGS}}},
        threads=1, wildcards=SimpleNamespace(dataset="digits"),
    )
    summary = pixelcnnpp.train(job)
    first, last = summary["history"][0], summary["history"][-1]
    assert np.isfinite(last["test_bpd"]) and last["test_bpd"] < first["test_bpd"]
    assert 0 < last["test_bpd"] < 8  # bits per 8-bit sub-pixel

    model = pixelcnnpp.make_model(SETTINGS)
    params = load_checkpoint(tmp_path / "model.msgpack", model, (8, 8, 1))
    assert jax.tree_util.tree_structure(params) is not None
    with pytest.raises(ValueError, match="nr_filters: checkpoint 8 vs config 16"):
        load_checkpoint(tmp_path / "model.msgpack", PixelCNNPP(1, 16, 3), (8, 8, 1))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.msgpack", model, (8, 8, 1))
