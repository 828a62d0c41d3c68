"""MADE sampling on scikit-learn's 8×8 digits: density, training, and every method = sequential."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ffsolve
from ffsolve.data import save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments import made
from ffsolve.experiments.made_density import bits_per_dim, flatten_images, to_logit, to_unit
from ffsolve.experiments.made_sampler import (
    StreamingTrace,
    logistic_noise,
    sampling_map,
    solve_samples,
)
from ffsolve.models.made import MADE, load_checkpoint

LAM = 1e-6
METHODS = [("sequential", None), ("jacobi", None), ("gs_jacobi", 8), ("gs_jacobi", 5),
           ("gs_jacobi", 64), ("jacobi_gs", 8)]


@pytest.fixture(scope="module")
def digits():
    data = load_digits_dataset()
    return flatten_images(data.train_images), flatten_images(data.test_images)


@pytest.fixture(scope="module")
def trained(digits):
    """A small MADE fitted for a few steps on digits (a trained model converges unlike a random one)."""
    torch.manual_seed(0)
    model = MADE(64, [64, 64])
    curve = made.fit(model, *digits, LAM, steps=60, batch_size=64, lr=3e-3, eval_every=20,
                     seed=0, dataset="digits", device="cpu")
    return model, curve


def test_density_integrates_to_one_over_pixel_space():
    # One dimension, a logistic in logit space: 2^(-bits) is a density over v in [0, 256).
    v = torch.linspace(0, 256, 256 * 64 + 1)[:-1] + 0.5 / 64
    y = to_logit(torch.zeros_like(v), v, LAM)[:, None]
    # (A logistic narrow enough that its mass outside [logit(λ), logit(1 − λ)] is below 1e-4.)
    density = 2.0 ** -bits_per_dim(y, torch.full_like(y, 0.5), torch.full_like(y, 0.3), LAM)
    assert float(density.mean() * 256) == pytest.approx(1.0, abs=2e-3)


def test_logit_transform_round_trips():
    pixels = torch.arange(256, dtype=torch.uint8)
    y = to_logit(pixels, torch.full((256,), 0.5), LAM)
    np.testing.assert_allclose(to_unit(y, LAM) * 256, pixels.float() + 0.5, atol=1e-3)


def test_cifar_layout_is_flattened_channel_major():
    images = np.zeros((1, 2, 2, 3), np.uint8)
    images[0, :, :, 1] = 7  # green plane
    assert flatten_images(images)[0].tolist() == [0] * 4 + [7] * 4 + [0] * 4


def test_training_lowers_test_bits_per_dim(trained, digits):
    model, curve = trained
    fresh = MADE(64, [64, 64])
    noise = torch.rand(digits[1].shape, generator=torch.Generator().manual_seed(1))
    before = made._evaluate(fresh, torch.from_numpy(digits[1]), noise, LAM)
    assert curve["step"] == [20, 40, 60]
    assert curve["test_bpd"][-1] < before - 0.5
    assert all(math.isfinite(v) for v in curve["train_bpd"])


def test_noise_is_seeded_and_logistic():
    a, b = logistic_noise(200, 64, seed=3), logistic_noise(200, 64, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, logistic_noise(200, 64, seed=4))
    assert torch.isfinite(a).all() and abs(float(a.mean())) < 0.05
    assert float(a.var()) == pytest.approx(math.pi ** 2 / 3, rel=0.05)


def test_sampling_map_is_triangular(trained):
    model, _ = trained
    f = sampling_map(model, logistic_noise(3, 64, seed=0), LAM)
    x = torch.randn(3, 64)
    changed = x.clone()
    changed[:, 40:] += 5.0
    assert torch.equal(f(x)[:, :41], f(changed)[:, :41])


@pytest.mark.parametrize("method,block_size", METHODS)
def test_every_method_returns_the_sequential_sample_bit_for_bit(trained, method, block_size):
    model, _ = trained
    noise = logistic_noise(16, 64, seed=11)
    reference = solve_samples(model, noise, LAM, "sequential")
    result = solve_samples(model, noise, LAM, method, block_size)
    assert torch.equal(result.x, reference.x)
    assert result.converged and 1 <= result.iterations <= 64
    if method == "jacobi":
        assert result.iterations < 64  # a trained MADE converges well before the worst case


def test_streaming_trace_matches_the_solvers_own_trace(trained):
    model, _ = trained
    noise = logistic_noise(5, 64, seed=2)
    for method in ("jacobi", "sequential"):
        final = solve_samples(model, noise, LAM, method).x
        recorder = StreamingTrace(final, snapshots=[0, 3, 500], keep=2)
        res = solve_samples(model, noise, LAM, method, recorder=recorder)
        full = ffsolve.solve(sampling_map(model, noise, LAM), torch.zeros_like(noise), method=method,
                             axis=1, trace=True, trace_batch_axis=0)
        arrays = recorder.arrays()
        np.testing.assert_allclose(arrays["error"], full.trace.error, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(arrays["change"], full.trace.change, rtol=1e-6, atol=1e-9)
        assert arrays["snapshot_iterations"].tolist() == [0, 3, res.iterations]
        np.testing.assert_array_equal(arrays["snapshots"][1], full.trace.iterates[3][:2])
        assert arrays["error"][-1].max() == 0


def _job(tmp_path, config, run=None, dataset="digits"):
    paths = SimpleNamespace(
        dataset=str(tmp_path / "digits.npz"), checkpoint=str(tmp_path / "model.pt"),
        metrics=str(tmp_path / (f"{run}_metrics.json" if run else "train.json")),
        trace=str(tmp_path / f"{run}_trace.npz"),
    )
    return made.Job(input=paths, output=paths, params=None, config=config, threads=1,
                    wildcards=SimpleNamespace(dataset=dataset, run=run))


def test_train_and_run_jobs_write_checkpoint_metrics_and_trace(tmp_path):
    save_prepared(load_digits_dataset(), tmp_path / "digits.npz")
    config = {
        "seed": 5, "device": "cpu", "timing": {"repeats": 2, "warmup": 0},
        "made": {
            "hidden_sizes": [32], "logit_lambda": {"digits": LAM},
            "train": {"steps": 4, "batch_size": 16, "lr": 1e-3, "eval_every": 2},
            "sample": {"batch": 6, "tol": 0.0, "snapshot_every": 2, "snapshot_count": 3, "show": 2},
        },
    }
    record = made.train(_job(tmp_path, config))
    assert record["curve"]["step"] == [2, 4]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["metadata"]["logit_lambda"] == LAM
    assert json.loads((tmp_path / "train.json").read_text())["final_test_bpd"] > 0
    first = None
    for run in ("sequential", "jacobi", "gs_jacobi_b16"):
        metrics = made.run(_job(tmp_path, config, run))
        assert metrics["exact_match"] is True and metrics["max_abs_diff_vs_sequential"] == 0
        assert 1 <= metrics["iterations"] <= metrics["sequence_length"] == 64
        with np.load(tmp_path / f"{run}_trace.npz") as trace:
            assert trace["error_mean"].shape == (metrics["iterations"] + 1,)
            assert trace["change_mean"].shape == (metrics["iterations"],)
            assert trace["snapshots"].shape[1:] == (2, 64)
            final = trace["snapshots"][-1]
        first = final if first is None else first
        np.testing.assert_array_equal(final, first)  # same noise, same weights: same samples
    # Same seed, same model: the same samples again; the checkpoint still loads.
    assert load_checkpoint(tmp_path / "model.pt")[0].nin == 64


def test_unusable_lambda_is_refused_naming_the_key():
    with pytest.raises(made.ConfigError, match="made.logit_lambda.cifar10"):
        made.dataset_lambda({"logit_lambda": {"mnist": 1e-6}}, "cifar10")
