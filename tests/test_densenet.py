"""DenseNet over layers: the batched Jacobi step, the solvers, the top-k statistics, the loaders.

The central property: one call of :func:`parallel_layers` computes every layer of a dense block
at once and agrees with the ordinary layer-by-layer forward pass, and the map it defines is
triangular over layers (exactly), so ``ffsolve.solve`` finds the forward pass in <= T calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.data import DataError
from ffsolve.experiments import densenet_inputs as inputs
from ffsolve.experiments import densenet_stats as stats
from ffsolve.experiments.densenet_solvers import LayerSystem
from ffsolve.models.densenet import (
    DenseNet,
    load_checkpoint,
    load_state,
    pack_layers,
    parallel_layers,
    remap_torchvision_keys,
    save_checkpoint,
)

# float32, sums in another order than the layer-by-layer convolutions: relative 1e-5 is ample.
RTOL, ATOL = 1e-5, 1e-5
TINY = dict(growth_rate=4, block_config=(3, 4, 2), num_init_features=6, bn_size=2,
            num_classes=10, in_channels=1, stem="small", stem_stride=2)


def randomised(model: DenseNet, seed: int = 0) -> DenseNet:
    """Non-trivial batch-norm statistics and affine parameters, so folding BN is really tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return randomised(DenseNet(**TINY))


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def block_layers(block, x):
    """Exact layer outputs of ``block`` for input ``x``: ``(L, N, g, H, W)`` from its forward."""
    out = block(x)[:, block.in_features:]
    n, _, h, w = out.shape
    return out.reshape(n, block.num_layers, block.growth_rate, h, w).transpose(0, 1)


# --- the batched step ----------------------------------------------------------------------------


@torch.no_grad()
def test_batched_step_equals_layer_by_layer_forward(tiny, batch):
    stem = tiny.stem(batch)
    block = tiny.dense_blocks()[0]
    exact = block_layers(block, stem)
    out = parallel_layers(pack_layers(block), stem, exact)
    torch.testing.assert_close(out, exact, rtol=RTOL, atol=ATOL)


@torch.no_grad()
def test_batched_step_of_a_middle_group_equals_forward(tiny, batch):
    block = tiny.dense_blocks()[1]
    x = torch.randn(2, block.in_features, 7, 7)
    exact = block_layers(block, x)
    prefix = LayerSystem.concat(x, exact[:1])
    out = parallel_layers(pack_layers(block, first=1, count=3), prefix, exact[1:4])
    torch.testing.assert_close(out, exact[1:4], rtol=RTOL, atol=ATOL)


@torch.no_grad()
def test_batched_step_is_exactly_triangular(tiny):
    block = tiny.dense_blocks()[1]
    packed = pack_layers(block)
    x = torch.randn(2, block.in_features, 7, 7)
    states = torch.randn(block.num_layers, 2, block.growth_rate, 7, 7)
    base = parallel_layers(packed, x, states)
    for j in range(block.num_layers):
        poked = states.clone()
        poked[j] += 100.0
        out = parallel_layers(packed, x, poked)
        # Outputs 0..j read only states < j: bit-for-bit unchanged. Output j+1 must change.
        assert torch.equal(out[: j + 1], base[: j + 1])
        if j + 1 < block.num_layers:
            assert not torch.equal(out[j + 1], base[j + 1])


def test_packing_refuses_training_mode():
    model = DenseNet(**TINY).train()
    with pytest.raises(ValueError, match="eval"):
        pack_layers(model.dense_blocks()[0])


# --- the solvers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [None, 1, 2, 10])
def test_methods_match_the_forward_pass_within_T(tiny, batch, block_size):
    system = LayerSystem(tiny, block_size)
    reference = system.sequential(batch)
    outcome = system.jacobi(batch) if block_size is None else system.gs_jacobi(batch)
    assert outcome.converged
    assert 1 <= outcome.iterations <= system.length == 9
    torch.testing.assert_close(outcome.logits, reference, rtol=RTOL, atol=ATOL)


@torch.no_grad()
def test_jacobi_map_fixed_point_is_ffsolve_sequential_bit_for_bit(tiny, batch):
    system = LayerSystem(tiny)
    stem = tiny.stem(batch)
    f = system.jacobi_map(stem)
    x0 = system.zeros(stem)
    sequential = ffsolve.solve(f, x0, method="sequential")
    for method in ("jacobi", "gs_jacobi", "jacobi_gs"):
        result = ffsolve.solve(f, x0, method=method)
        assert result.iterations <= system.length
        assert torch.equal(result.x, sequential.x), method


@torch.no_grad()
def test_stopping_early_keeps_the_exact_prefix(tiny, batch):
    system = LayerSystem(tiny, block_size=2)
    exact = system.jacobi(batch).state
    for k in (1, 4, 7):
        for outcome in (system.jacobi(batch, max_iters=k), system.gs_jacobi(batch, max_iters=k)):
            assert outcome.iterations == k and not outcome.converged
            torch.testing.assert_close(outcome.state[:k], exact[:k], rtol=RTOL, atol=ATOL)


@torch.no_grad()
def test_trace_hooks_see_each_iterate(tiny, batch):
    system = LayerSystem(tiny, block_size=3)
    stem = tiny.stem(batch)
    for method in ("jacobi", "gs_jacobi"):
        seen, ticks = [], []
        outcome = system.run(method, batch, on_call=lambda s: seen.append(s.clone()),
                             tick=lambda y: ticks.append(1))
        assert len(seen) == len(ticks) == outcome.iterations
        torch.testing.assert_close(system.readout(stem, seen[-1]), outcome.logits)


# --- statistics ------------------------------------------------------------------------------------


def test_topk_is_descending_not_the_original_ascending():
    logits = np.array([[0.1, 5.0, -3.0, 2.0, 4.0, 0.0, 1.0]])
    assert stats.topk(logits, 3).tolist() == [[1, 4, 3]]
    assert stats.topk(logits, 1).tolist() == [[1]]


def test_stable_from_ignores_a_first_match_that_relapses():
    # image 0 matches at 1, relapses at 2, stays from 3; image 1 from 0; image 2 never.
    mismatch = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1]], dtype=bool)
    assert stats.stable_from(mismatch).tolist() == [3, 0, stats.NEVER]
    assert stats.batch_stable_iteration(mismatch) == stats.NEVER
    assert stats.batch_stable_iteration(mismatch[:, :2]) == 3


def test_topk_mismatch_compares_ordered_lists():
    reference = np.array([[3.0, 2.0, 1.0, 0.0]])
    swapped = np.array([[[2.0, 3.0, 1.0, 0.0]], [[3.0, 2.0, 1.0, 0.0]]])
    assert stats.topk_mismatch(swapped, reference, 2)[:, 0].tolist() == [True, False]


# --- checkpoints and loaders -----------------------------------------------------------------------


@torch.no_grad()
def test_torchvision_densenet_weights_load_and_agree():
    from torchvision.models import densenet121

    torch.manual_seed(0)
    theirs = densenet121(weights=None).eval()
    randomised(theirs)
    ours = DenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64)
    # The released .pth files use the old names ("norm.1"); both spellings must load.
    old_style = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
                 for k, v in theirs.state_dict().items()}
    assert any(".norm.1." in k for k in old_style)
    assert set(remap_torchvision_keys(old_style)) == set(theirs.state_dict())
    load_state(ours, old_style, "test").eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_load_state_names_the_misfit():
    model = DenseNet(**TINY)
    with pytest.raises(ValueError, match="nowhere.pth.*missing keys"):
        load_state(model, {"classifier.bias": torch.zeros(10)}, "nowhere.pth")
    with pytest.raises(ValueError, match="(?s)nowhere.pth.*size mismatch"):
        load_state(model, {"classifier.weight": torch.zeros(10, 1)}, "nowhere.pth")


def test_checkpoint_round_trip(tiny, batch, tmp_path):
    path = str(tmp_path / "model.pt")
    save_checkpoint(tiny, TINY, path)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(batch), tiny(batch))


def test_pretrained_weights_fail_clearly_without_file_or_download(tmp_path):
    with pytest.raises(DataError, match="densenet.imagenet_val.weights_file"):
        inputs.load_densenet201_pretrained(None, download=False, cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="not a file"):
        inputs.load_densenet201_pretrained(str(tmp_path / "absent.pth"), True, str(tmp_path))


def test_imagenet_folder_errors_and_reading(tmp_path):
    with pytest.raises(DataError, match="data.imagenet_val.folder"):
        inputs.imagenet_batches(None, 2, 0, None)
    with pytest.raises(DataError, match="not a folder"):
        inputs.imagenet_batches(str(tmp_path / "absent"), 2, 0, None)
    from PIL import Image

    for cls, size in (("n01", (20, 16)), ("n02", (24, 30))):
        (tmp_path / cls).mkdir()
        Image.new("RGB", size, color=(200, 10, 10)).save(tmp_path / cls / "a.JPEG")
    batches, labels = inputs.imagenet_batches(str(tmp_path), 2, 0, None)
    assert sorted(b.shape[-2:] for b in batches) == [(16, 20), (30, 24)]  # full resolution
    assert labels is None  # not the 1,000 ImageNet classes: not scored
    with pytest.raises(DataError, match="asks for 3"):
        inputs.imagenet_batches(str(tmp_path), 3, 0, None)
