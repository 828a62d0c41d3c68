"""MADE itself: the autoregressive property, masks that reach every earlier input, checkpoints."""

import pytest
import torch

from ffsolve.experiments.made import ConfigError, check_checkpoint_fits
from ffsolve.models.made import (
    MADE,
    CheckpointError,
    autoregressive_masks,
    connectivity,
    load_checkpoint,
    save_checkpoint,
)

MNIST_CFG = {"hidden_sizes": [16, 16], "logit_lambda": {"mnist": 1e-6}}


def random_made(nin=12, hidden=(20, 20), seed=0):
    torch.manual_seed(seed)
    model = MADE(nin, hidden)
    with torch.no_grad():  # non-trivial weights and biases everywhere, as after training
        for p in model.parameters():
            p.normal_()
    return model.eval()


@pytest.mark.parametrize("hidden", [(20, 20), (5,), (3, 7, 4)])
def test_output_d_is_unaffected_by_inputs_from_d_on(hidden):
    nin = 12
    model = random_made(nin, hidden)
    x = torch.randn(4, nin)
    mean, log_scale = model(x)
    for d in range(nin):
        changed = x.clone()
        changed[:, d:] = torch.randn(4, nin - d) * 10
        new_mean, new_log_scale = model(changed)
        # Bit for bit: masked weights are exact zeros (what makes Jacobi equal sequential).
        assert torch.equal(new_mean[:, : d + 1], mean[:, : d + 1]), d
        assert torch.equal(new_log_scale[:, : d + 1], log_scale[:, : d + 1]), d


def test_jacobian_is_strictly_lower_triangular_and_uses_earlier_inputs():
    model = random_made(10, (40, 40))
    x = torch.randn(1, 10)
    jac = torch.autograd.functional.jacobian(lambda v: model(v)[0], x)[0, :, 0, :]
    assert torch.all(jac.triu() == 0)
    # ...and is not empty: most earlier inputs really reach each output (ReLUs cut a few paths).
    below = jac.tril(-1) != 0
    assert below.sum() >= 0.8 * 45 and below[-1, :-1].all()


def test_narrow_hidden_layers_still_reach_every_earlier_input():
    # 64 inputs through 16-unit layers: a cyclic degree assignment would cut off inputs > 16.
    reach = connectivity(MADE(64, [16, 16]))
    assert reach[-1, :-1].all() and not reach.triu().any()


def test_masks_have_layer_shapes_and_tile_the_outputs():
    masks = autoregressive_masks(6, [4, 5], nout_per_dim=2)
    assert [tuple(m.shape) for m in masks] == [(4, 6), (5, 4), (12, 5)]
    assert torch.equal(masks[-1][:6], masks[-1][6:])
    assert masks[-1][0].sum() == 0  # the first dimension depends on nothing but its bias


def test_made_refuses_nonsense_sizes():
    with pytest.raises(ValueError, match="nin"):
        MADE(1, [4])
    with pytest.raises(ValueError, match="hidden_sizes"):
        MADE(4, [])


def test_checkpoint_loads_with_weights_only_and_reproduces_outputs(tmp_path):
    model = random_made()
    path = tmp_path / "made.pt"
    save_checkpoint(model, path, {"logit_lambda": 1e-6, "dataset": "mnist"})
    payload = torch.load(path, weights_only=True)
    assert payload["nin"] == 12 and payload["metadata"]["dataset"] == "mnist"
    loaded, metadata = load_checkpoint(path)
    x = torch.randn(3, 12)
    assert all(torch.equal(a, b) for a, b in zip(model(x), loaded(x)))
    assert metadata["logit_lambda"] == 1e-6


def test_bare_state_dict_is_accepted(tmp_path):
    model = random_made(nin=8, hidden=(6, 7))
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    loaded, _ = load_checkpoint(tmp_path / "bare.pt")
    assert loaded.hidden_sizes == [6, 7]
    x = torch.randn(2, 8)
    assert torch.equal(model(x)[0], loaded(x)[0])


def test_checkpoint_with_non_autoregressive_masks_is_refused(tmp_path):
    model = random_made(nin=8, hidden=(6,))
    model.masked_layers()[0].mask.fill_(1.0)  # every hidden unit now sees every input
    torch.save(model.state_dict(), tmp_path / "leaky.pt")
    with pytest.raises(CheckpointError, match="not autoregressive"):
        load_checkpoint(tmp_path / "leaky.pt")


def test_missing_and_garbage_checkpoints_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nothere.pt does not exist.*made.checkpoint"):
        load_checkpoint(tmp_path / "nothere.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a MADE checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_that_disagrees_with_the_config_names_the_key():
    model = MADE(784, [16, 16])
    check_checkpoint_fits({"logit_lambda": 1e-6}, model, MNIST_CFG, "mnist", "m.pt")
    with pytest.raises(ConfigError, match=r"made.hidden_sizes is \[32\]"):
        check_checkpoint_fits({}, model, {**MNIST_CFG, "hidden_sizes": [32]}, "mnist", "m.pt")
    with pytest.raises(ConfigError, match="made.logit_lambda.mnist"):
        check_checkpoint_fits({"logit_lambda": 0.05}, model, MNIST_CFG, "mnist", "m.pt")
    with pytest.raises(ConfigError, match="made.checkpoint.mnist: m.pt models 64 dimensions"):
        check_checkpoint_fits({}, MADE(64, [16, 16]), MNIST_CFG, "mnist", "m.pt")
