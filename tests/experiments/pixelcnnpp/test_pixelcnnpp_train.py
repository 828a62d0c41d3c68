"""PixelCNN++ training: a few Adam steps lower the bits per dimension on 8×8 digits; the checkpoint
round-trips to the same network outputs, and a mismatching one is refused naming the keys."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffsolve.data.core import save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments.pixelcnnpp import experiment
from ffsolve.experiments.pixelcnnpp.experiment import MeasureSettings, Training
from ffsolve.experiments.pixelcnnpp.model import PixelCNNPP, load_checkpoint
from ffsolve.kit import CheckpointError, SettingsError, settings_from

SETTINGS = {
    "methods": ["sequential"], "block_sizes": [8], "tol": 0.0,
    "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 3, "checkpoint": None,
    "batch": 2,
    "train": {"steps": 12, "batch": 16, "lr": 0.005, "lr_decay": 0.5,
              "eval_every": 6, "test_images": 32},
}


@pytest.mark.slow  # compiles a training step and an evaluation: ~20 s on two shared cores
def test_training_lowers_bits_per_dim_and_writes_a_checkpoint_that_round_trips(tmp_path):
    data = load_digits_dataset()
    save_prepared(data, tmp_path / "digits.npz")
    settings = settings_from(MeasureSettings, SETTINGS, "pixelcnnpp")
    summary = experiment.train(settings, dataset="digits", seed=3, data=str(tmp_path / "digits.npz"),
                               checkpoint=str(tmp_path / "model.msgpack"),
                               record=str(tmp_path / "train.json"))
    first, last = summary["history"][0], summary["history"][-1]
    assert np.isfinite(last["test_bpd"]) and last["test_bpd"] < first["test_bpd"]
    assert 0 < last["test_bpd"] < 8  # bits per 8-bit sub-pixel
    assert (tmp_path / "train.json").exists()

    model = experiment.make_model(settings)
    params = load_checkpoint(tmp_path / "model.msgpack", model, (8, 8, 1))
    # The trained weights moved away from their initialisation, shapes unchanged ...
    init = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(init)
    same_shapes = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, params, init)
    assert all(jax.tree_util.tree_leaves(same_shapes))
    # ... and the loaded checkpoint gives the trained model's last test bits per dimension.
    from ffsolve.experiments.pixelcnnpp import mixture
    x = jnp.asarray(experiment.to_model_range(data.test_images[:32]))
    chunks = [mixture.bits_per_dim(model.apply({"params": params}, x[i: i + 16]), x[i: i + 16])
              for i in (0, 16)]
    assert float(np.mean(chunks)) == pytest.approx(last["test_bpd"], rel=1e-5)
    again = load_checkpoint(tmp_path / "model.msgpack", model, (8, 8, 1))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                     jax.tree_util.tree_leaves(again)))

    with pytest.raises(ValueError, match="nr_filters: checkpoint 8 vs config 16"):
        load_checkpoint(tmp_path / "model.msgpack", PixelCNNPP(1, 16, 3), (8, 8, 1))
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.msgpack", model, (8, 8, 1))
    (tmp_path / "junk.msgpack").write_bytes(b"not msgpack")
    with pytest.raises(ValueError, match="not an ffsolve PixelCNN\\+\\+ checkpoint"):
        load_checkpoint(tmp_path / "junk.msgpack", model, (8, 8, 1))


def test_settings_refuse_missing_and_unknown_keys_naming_them():
    with pytest.raises(SettingsError, match="pixelcnnpp.train.steps"):
        settings_from(MeasureSettings, {**SETTINGS, "train": {k: v for k, v in SETTINGS["train"].items()
                                                       if k != "steps"}}, "pixelcnnpp")
    with pytest.raises(SettingsError, match="block_rows"):
        settings_from(MeasureSettings, {**SETTINGS, "block_rows": {"gs_jacobi": 4}}, "pixelcnnpp")
    settings = settings_from(MeasureSettings, SETTINGS, "pixelcnnpp")
    assert settings.block_sizes == (8,) and isinstance(settings.train, Training)
    assert dataclasses.replace(settings, methods=("jacobi",)).methods == ("jacobi",)
