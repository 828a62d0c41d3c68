"""MADE itself: the autoregressive property, masks that reach every earlier input, checkpoints."""

import pytest
import torch

from ffsolve.experiments.made.experiment import check_checkpoint_fits
from ffsolve.kit import SettingsError
from ffsolve.experiments.made.model import (
    MADE,
    CheckpointError,
    autoregressive_masks,
    connectivity,
    load_checkpoint,
    save_checkpoint,
)

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
    assert not list(tmp_path.glob("*.tmp")), "the checkpoint is written atomically"
    loaded, metadata = load_checkpoint(path)
    assert metadata == {"logit_lambda": 1e-6, "dataset": "mnist"}
    assert not loaded.training
    # Every weight, bias and mask comes back, bit for bit ...
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    # ... so the loaded model reproduces the saved one's outputs exactly, and they are the saved
    # weights' outputs, not those of a freshly initialised MADE of the same size.
    x = torch.randn(3, 12)
    (mean, log_scale), (loaded_mean, loaded_log_scale) = model(x), loaded(x)
    assert torch.equal(mean, loaded_mean) and torch.equal(log_scale, loaded_log_scale)
    assert not torch.equal(MADE(12, [20, 20])(x)[0], loaded_mean)


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
    with pytest.raises(CheckpointError, match="nothere.pt does not exist.*made.per_dataset.<dataset>.checkpoint"):
        load_checkpoint(tmp_path / "nothere.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a MADE checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_that_disagrees_with_the_settings_names_the_key():
    model = MADE(784, [16, 16])
    check_checkpoint_fits({"logit_lambda": 1e-6}, model, [16, 16], 1e-6, "mnist", "m.pt")
    with pytest.raises(SettingsError, match=r"made.hidden_sizes is \[32\]"):
        check_checkpoint_fits({}, model, [32], 1e-6, "mnist", "m.pt")
    with pytest.raises(SettingsError, match=r"made.per_dataset.mnist.logit_lambda"):
        check_checkpoint_fits({"logit_lambda": 0.05}, model, [16, 16], 1e-6, "mnist", "m.pt")
    with pytest.raises(SettingsError, match="made.per_dataset.mnist.checkpoint: m.pt models 64 dimensions"):
        check_checkpoint_fits({}, MADE(64, [16, 16]), [16, 16], 1e-6, "mnist", "m.pt")


def test_masked_weight_is_reused_only_while_weights_and_masks_are_unchanged():
    model = random_made()
    x = torch.randn(3, 12)
    layer = model.masked_layers()[0]
    with torch.no_grad():
        first = model(x)[0]
        assert layer.masked_weight() is layer.masked_weight()  # reused between calls
        layer.weight.mul_(2.0)  # an in-place update (as an optimizer step makes)
        assert torch.equal(layer.masked_weight(), layer.weight * layer.mask)
        assert not torch.equal(model(x)[0], first)
        layer.mask.zero_()
        assert torch.equal(layer.masked_weight(), torch.zeros_like(layer.weight))
    fresh = random_made()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x)[0], model(x)[0])
        model.double()  # a new dtype and storage: recomputed
        assert layer.masked_weight().dtype == torch.float64
    # With autograd on, the product is taken afresh, so gradients reach the weights.
    model.float().train()
    model(x)[0].sum().backward()
    assert model.masked_layers()[1].weight.grad is not None
