"""DenseNet over layers: the batched Jacobi step, the solvers, the tolerance, the top-k
statistics, the loaders.

The central property: one call of :func:`parallel_layers` computes every layer of a dense block
at once and agrees with the ordinary layer-by-layer forward pass, and the map it defines is
triangular over layers (exactly), so ``ffsolve.solve`` finds the forward pass in <= T calls.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.data import DataError
from ffsolve.experiments.densenet import data as inputs
from ffsolve.experiments.densenet import stats
from ffsolve.experiments.densenet.model import (
    DenseNet,
    load_checkpoint,
    load_densenet201_pretrained,
    load_state,
    pack_layers,
    parallel_layers,
    remap_torchvision_keys,
    save_checkpoint,
)
from ffsolve.experiments.densenet.system import (
    CONTRACT_MODEL,
    LOGIT_FACTOR,
    UNIT_ROUNDOFF,
    LayerSystem,
    Top5Patience,
    forward_candidate,
    logit_tolerance,
    randomised_batch_norm,
    solve_batches,
    traced_batches,
)

# float32, sums in another order than the layer-by-layer convolutions: relative 1e-5 is ample.
RTOL, ATOL = 1e-5, 1e-5
TINY = CONTRACT_MODEL  # T = 9 dense layers in blocks of 3, 4, 2


def randomised(model: DenseNet, seed: int = 0) -> DenseNet:
    return randomised_batch_norm(model, seed)


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


@pytest.mark.parametrize("method, block_size, evaluations", [
    ("sequential", None, 1.0),
    ("jacobi", None, 9.0),  # every call computes all 9 layers
    ("gs_jacobi", 1, 1.0),  # one layer per call: the forward pass in 9 batched calls
    ("gs_jacobi", 2, 17 / 9),  # groups of 2, 1 | 2, 2 | 2 layers, K calls of K layers each
    ("gs_jacobi", 10, 29 / 9),  # one group per dense block: 3*3 + 4*4 + 2*2 layers computed
])
def test_methods_match_the_forward_pass_within_T(tiny, batch, method, block_size, evaluations):
    system = LayerSystem(tiny, block_size)
    with torch.no_grad():
        reference = tiny(batch)
    result = system.run(method, batch)
    assert isinstance(result, ffsolve.SolveResult) and result.converged
    assert result.method == method and result.block_size == block_size and result.tol == 0.0
    assert 1 <= result.iterations <= result.sequence_length == system.length == 9
    assert result.network_evaluations == pytest.approx(evaluations)
    assert logit_tolerance(tiny, [batch]).holds([result.x.numpy()], [reference.numpy()])
    if method == "sequential":
        assert torch.equal(result.x, reference)


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
    torch.testing.assert_close(sequential.x, system.forward_state(batch), rtol=RTOL, atol=ATOL)


@torch.no_grad()
def test_stopping_early_keeps_the_exact_prefix(tiny, batch):
    system = LayerSystem(tiny, block_size=2)
    exact = system.forward_state(batch)
    for k in (1, 4, 7):
        for method in ("jacobi", "gs_jacobi"):
            seen = []
            result = system.run(method, batch, max_iters=k, on_call=lambda s, seen=seen: seen.append(s.clone()))
            assert result.iterations == k == len(seen) and not result.converged
            torch.testing.assert_close(seen[-1][:k], exact[:k], rtol=RTOL, atol=ATOL)
            # the logits of the stopped run are those of its last iterate
            torch.testing.assert_close(result.x, system.readout(tiny.stem(batch), seen[-1]))


@torch.no_grad()
def test_traced_runs_give_the_timed_output_and_every_iterate(tiny, batch):
    for method, block in (("sequential", None), ("jacobi", None), ("gs_jacobi", 3)):
        system = LayerSystem(tiny, block)
        result, frames = traced_batches(system, method, [batch, batch[:1]])
        timed = solve_batches(system, method, [batch, batch[:1]])
        assert torch.equal(result.x, timed.x) and result.iterations == timed.iterations
        assert frames.shape == (result.iterations + 1, 4, 10)
        assert np.array_equal(frames[-1], timed.x.numpy())
        # iterate 0 is the all-zero guess: the same logits whatever the method
        stem = tiny.stem(batch)
        assert np.array_equal(frames[0, :3], system.readout(stem, system.zeros(stem)).numpy())


# --- the reference and the top-5 stop ------------------------------------------------------------


def test_forward_candidate_is_the_models_own_forward_pass(tiny, batch):
    candidate = forward_candidate(tiny, [batch, batch[:1]])
    assert candidate.name == "sequential" and candidate.tolerance is None
    result = candidate.program()
    with torch.no_grad():
        assert torch.equal(result.x, torch.cat([tiny(batch), tiny(batch[:1])]))
    assert result.iterations == 9 and result.network_evaluations == 1.0 and result.converged
    traced, _ = candidate.traced()
    assert torch.equal(traced.x, result.x)
    with pytest.raises(ValueError, match="eval"):
        forward_candidate(DenseNet(**TINY).train(), [batch])


def test_top5_rule_counts_unchanged_steps_and_resets_on_a_change():
    rule = Top5Patience(2)
    a = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5, 6]])
    swapped = a.clone()
    swapped[0, 3], swapped[0, 4] = 2.0, 3.0  # 4th and 5th place of image 0 trade: the list changes
    seen = [rule.observe(x) for x in (a, a, swapped, swapped, a * 2, a * 3)]
    # a->a: 1 unchanged; ->swapped: reset; ->swapped: 1; ->a*2: reset; ->a*3: 1 ... never 2
    assert seen == [False] * 6
    assert rule.observe(a + 1) is True  # a*2 -> a*3 -> a+1: two unchanged steps in a row
    beyond = a.clone()
    beyond[0, 6] = -5.0  # only the 7th class moves: outside the top-5, not a change
    assert Top5Patience(1).observe(a) is False
    rule = Top5Patience(1)
    rule.observe(a)
    assert rule.observe(beyond) is True
    assert Top5Patience(1, k=5).observe(torch.zeros(2, 3)) is False  # k is cut to C = 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="densenet.top5_patience"):
            Top5Patience(bad)


def _settling_model():
    """T = 12 dense layers (blocks of 2, 2, 8) whose last block's layers barely reach the logits
    (their classifier weights scaled by 1e-6): the top-5 lists settle once the first two blocks
    are exact (step 4) while the last block's layers keep changing until step 12."""
    torch.manual_seed(3)
    model = randomised(DenseNet(**{**TINY, "block_config": (2, 2, 8)}), seed=3)
    with torch.no_grad():
        model.classifier.weight[:, model.dense_blocks()[-1].in_features:] *= 1e-6
    return model


@torch.no_grad()
def test_top5_stop_is_early_where_the_top5_settles_and_never_asks_the_forward_pass(batch):
    model = _settling_model()
    reference = model(batch).numpy()
    exact = LayerSystem(model).run("jacobi", batch)
    assert exact.iterations == 12 and exact.converged  # to the fixed point: all T steps
    system = LayerSystem(model, top5_patience=2)
    model.forward = None  # the reference is out of reach: calling it would raise
    frames = []
    result = system.run("jacobi_top5", batch, on_call=lambda s: frames.append(s.clone()))
    assert result.method == "jacobi_top5" and not result.converged
    assert result.iterations == len(frames) < 12  # stopped early, by the rule
    # the rule, replayed by brute force on the iterates' logits
    stem = model.stem(batch)
    logits = [system.readout(stem, system.zeros(stem))] + [system.readout(stem, f) for f in frames]
    lists = [stats.topk(x.numpy(), 5) for x in logits]
    unchanged = [np.array_equal(lists[k], lists[k - 1]) for k in range(1, len(lists))]
    first = next(k for k in range(2, len(lists)) if unchanged[k - 1] and unchanged[k - 2])
    assert result.iterations == first
    assert torch.equal(result.x, logits[-1])
    assert stats.topk_agreement(result.x.numpy(), reference, 5)["ordered"] == 1.0


@torch.no_grad()
def test_top5_stop_never_exceeds_T_and_runs_to_the_fixed_point_without_settling(tiny, batch):
    jacobi = LayerSystem(tiny).run("jacobi", batch)
    for patience in (9, 50):
        result = LayerSystem(tiny, top5_patience=patience).run("jacobi_top5", batch)
        assert result.converged and result.iterations == jacobi.iterations <= 9
        assert torch.equal(result.x, jacobi.x)  # the fixed point: jacobi's logits bit for bit
    with pytest.raises(ValueError, match="top5_patience"):
        LayerSystem(tiny).run("jacobi_top5", batch)
    with pytest.raises(ValueError, match="no budget"):
        LayerSystem(tiny, top5_patience=1).run("jacobi_top5", batch, max_iters=3)


def test_topk_agreement_fractions_by_hand():
    reference = np.array([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6], [9, 8, 7, 6, 5, 4]])
    logits = reference.copy()
    logits[1] = [0, 1, 2, 3, 5, 4]  # top-5 classes the same, 1st and 2nd swapped: set yes, list no
    logits[2] = [6, 2, 3, 4, 5, 1]  # class 0 enters the top-5, class 5 leaves: neither
    got5 = stats.topk_agreement(logits, reference, 5)
    got1 = stats.topk_agreement(logits, reference, 1)
    assert got5 == {"ordered": 0.5, "as_set": 0.75}
    assert got1["ordered"] == 0.5  # images 0 and 3
    with pytest.raises(ValueError, match="must both be"):
        stats.topk_agreement(logits[:2], reference, 5)


# --- the tolerance ---------------------------------------------------------------------------------


@torch.no_grad()
def test_tolerance_is_the_forward_pass_float32_error_against_float64(tiny, batch):
    tolerance = logit_tolerance(tiny, [batch])
    exact = copy.deepcopy(tiny).double()(batch.double())
    error = float((tiny(batch).double() - exact).abs().max())
    assert error > 0 and tolerance.atol == pytest.approx(LOGIT_FACTOR * error) and tolerance.rtol == 0.0
    assert UNIT_ROUNDOFF == 2.0 ** -24 and "float64" in tolerance.why and "logits" in tolerance.why
    # a float64 model: the float32 error scaled by the units' ratio
    assert logit_tolerance(copy.deepcopy(tiny).double(), [batch.double()]).atol == pytest.approx(
        tolerance.atol * 2.0 ** -29)


class _Skipped:
    """The forward pass with one dense layer's output replaced by zeros (the layer skipped)."""

    def __init__(self, model: DenseNet, layer: int):
        self.layer = [m for block in model.dense_blocks() for m in block.values()][layer]

    def __enter__(self):
        self.hook = self.layer.register_forward_hook(lambda module, args, out: torch.zeros_like(out))

    def __exit__(self, *exc):
        self.hook.remove()


@torch.no_grad()
def test_tolerance_passes_the_batched_paths_and_rejects_a_skipped_layer_or_an_early_stop(tiny, batch):
    tolerance = logit_tolerance(tiny, [batch])
    reference = tiny(batch)
    for block in (1, 2, None):
        method = "gs_jacobi" if block else "jacobi"
        got = LayerSystem(tiny, block).run(method, batch).x
        assert tolerance.holds([got.numpy()], [reference.numpy()]), (method, block)
    system = LayerSystem(tiny)
    for layer in range(system.length):
        with _Skipped(tiny, layer):
            skipped = tiny(batch)
        assert not tolerance.holds([skipped.numpy()], [reference.numpy()]), layer
    # Jacobi needs all T steps on this model; the step before leaves the last layer wrong.
    assert system.jacobi(batch).iterations == system.length
    early = system.jacobi(batch, max_iters=system.length - 1)
    assert not early.converged
    assert not tolerance.holds([early.x.numpy()], [reference.numpy()])


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


def test_stable_iteration_is_the_first_from_which_top5_never_changes_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(200):
        steps, images = rng.integers(1, 8), rng.integers(1, 4)
        mismatch = rng.random((steps, images)) < rng.random()
        per_image = stats.stable_from(mismatch)
        for i in range(images):
            agreeing = [k for k in range(steps) if not mismatch[k:, i].any()]
            assert per_image[i] == (agreeing[0] if agreeing else stats.NEVER), (trial, mismatch[:, i])
        everyone = [k for k in range(steps) if not mismatch[k:].any()]
        assert stats.batch_stable_iteration(mismatch) == (everyone[0] if everyone else stats.NEVER)


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
    save_checkpoint(tiny, path, TINY)
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(batch), tiny(batch))


def test_pretrained_weights_fail_clearly_without_file_or_download(tmp_path):
    with pytest.raises(DataError, match="densenet.weights_file"):
        load_densenet201_pretrained(None, download=False, cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="not a file"):
        load_densenet201_pretrained(str(tmp_path / "absent.pth"), True, str(tmp_path))


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
