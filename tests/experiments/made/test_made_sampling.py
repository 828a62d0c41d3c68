"""MADE sampling on scikit-learn's 8×8 digits: density, training, and every method = sequential."""

import copy
import json
import math
from dataclasses import fields
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ffsolve
from ffsolve.data import save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments.made import experiment
from ffsolve.experiments.made.density import bits_per_dim, flatten_images, to_logit, to_unit
from ffsolve.experiments.made.experiment import (
    MeasureSettings,
    Sampling,
    TrainSettings,
    Training,
    fit,
)
from ffsolve.experiments.made.model import MADE, hidden_degrees
from ffsolve.experiments.made.system import (
    CachedSampler,
    StreamingTrace,
    cache_tolerance,
    candidates,
    logistic_noise,
    run_specs,
    sampling_map,
    solve_samples,
)
from ffsolve.kit import SettingsError, measure, read_metrics, settings_from, validate_record
from ffsolve.kit.harness import TimingSettings
from ffsolve.workflow.config import dataset_settings

LAM = 1e-6
METHODS = [("sequential", None), ("jacobi", None), ("gs_jacobi", 8), ("gs_jacobi", 5),
           ("gs_jacobi", 64), ("jacobi_gs", 8)]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def digits():
    data = load_digits_dataset()
    return flatten_images(data.train_images), flatten_images(data.test_images)


@pytest.fixture(scope="module")
def trained(digits):
    """A small MADE fitted for a few steps on digits (a trained model converges unlike a random one)."""
    torch.manual_seed(0)
    model = MADE(64, [64, 64])
    curve = fit(model, *digits, LAM, Training(steps=60, batch=64, lr=3e-3, eval_every=20),
                seed=0, dataset="digits")
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
    before = experiment._evaluate(fresh, torch.from_numpy(digits[1]), noise, LAM)
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
    assert not torch.equal(f(x)[:, 41:], f(changed)[:, 41:])  # later positions do read them


@pytest.mark.parametrize("method,block_size", METHODS)
def test_every_method_returns_the_sequential_sample_bit_for_bit(trained, method, block_size):
    model, _ = trained
    noise = logistic_noise(16, 64, seed=11)
    reference = solve_samples(model, noise, LAM, "sequential")
    result = solve_samples(model, noise, LAM, method, block_size)
    assert torch.equal(result.x, reference.x)
    assert result.converged and 1 <= result.iterations <= 64
    assert result.network_evaluations == result.iterations  # every call is one full forward
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


def test_traced_twin_measures_the_error_to_the_timed_sample(trained):
    model, _ = trained
    noise = logistic_noise(4, 64, seed=5)
    runs = run_specs(["sequential", "jacobi", "jacobi_gs"], [16])
    assert [r.name for r in runs] == ["sequential", "jacobi", "jacobi_gs_b16"]
    found = measure(candidates(model, noise, LAM, runs, snapshots=(0, 2), keep=3,
                               trace_extra={"logit_lambda": np.asarray(LAM)}), repeats=2, warmup=0)
    for name, m in found.items():
        trace = m.trace
        assert m.bitwise_equal and m.max_abs_diff == 0, name
        assert trace["error_mean"].shape == (m.result.iterations + 1,)
        assert trace["change_mean"].shape == (m.result.iterations,)
        assert trace["error_mean"][-1] == 0 and trace["error_mean"][0] > 0
        assert trace["snapshots"].shape == (3, 3, 64) and trace["snapshots"].dtype == np.float32
        np.testing.assert_array_equal(trace["snapshots"][-1], m.result.x[:3].numpy())
        assert float(trace["logit_lambda"]) == LAM
    assert found["sequential"].result.iterations == 64
    assert found["jacobi"].result.iterations < 64


def _permuted_hidden_units(model: MADE, seed: int) -> MADE:
    """The same network with every hidden layer's units shuffled: degrees no longer rise with the
    index, so the masks' prefixes must be found, not assumed."""
    other = MADE(model.nin, model.hidden_sizes)
    other.load_state_dict(model.state_dict())
    layers = other.masked_layers()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for inner, outer in pairwise(layers):
            perm = torch.randperm(inner.out_features, generator=generator)
            for tensor in (inner.weight, inner.mask, inner.bias):
                tensor.copy_(tensor[perm])
            for tensor in (outer.weight, outer.mask):
                tensor.copy_(tensor[:, perm])
    return other.eval()


def _expected_share(nin, hidden_sizes):
    """Multiply-adds of sequential_cache over all steps, in full passes, from the degrees alone:
    step t computes the last hidden layer's units of degree <= t (those output t reads), each layer
    before it the units of degree <= the largest degree of the units computed after it."""
    degrees = hidden_degrees(nin, hidden_sizes)
    full = nin * hidden_sizes[0] + sum(a * b for a, b in pairwise(hidden_sizes)) + hidden_sizes[-1] * 2 * nin
    total = 0
    for t in range(nin):
        counts, top = [], t
        for degree in reversed(degrees):
            chosen = degree[degree <= top]
            counts.insert(0, len(chosen))
            top = int(chosen.max()) if len(chosen) else 0
        update = hidden_sizes[0] if t < nin - 1 else 0
        total += update + sum(a * b for a, b in pairwise(counts)) + 2 * counts[-1]
    return total / full


@pytest.mark.parametrize("restrict", [True, False])
def test_sequential_cache_is_sequential_within_its_tolerance_at_a_fraction_of_the_work(trained, restrict):
    model, _ = trained
    noise = logistic_noise(16, 64, seed=11)
    reference = solve_samples(model, noise, LAM, "sequential")
    result = CachedSampler(model, noise, LAM, restrict=restrict).run()
    tolerance = cache_tolerance(model, LAM, noise)
    assert tolerance.holds([result.x.numpy()], [reference.x.numpy()]), float((result.x - reference.x).abs().max())
    assert result.method == "sequential_cache" and result.converged
    assert result.iterations == result.sequence_length == 64  # one parallel step per dimension
    # Work in full passes: the rank-1 updates add up to one first layer, the later layers shrink.
    if restrict:
        assert result.network_evaluations == pytest.approx(_expected_share(64, [64, 64]), rel=1e-12)
        assert result.network_evaluations < 64 / 4
    else:
        full = 64 * 64 + 64 * 64 + 64 * 128
        per_step = 64 * 64 + 2 * 64
        assert result.network_evaluations == pytest.approx((64 * per_step + 63 * 64) / full, rel=1e-12)


def test_sequential_cache_finds_the_prefixes_from_the_masks_not_the_unit_order(trained):
    model, _ = trained
    shuffled = _permuted_hidden_units(model, seed=3)
    noise = logistic_noise(8, 64, seed=4)
    reference = solve_samples(shuffled, noise, LAM, "sequential")
    # Same network: the same sample (within rounding), and the same work once the units are sorted.
    assert cache_tolerance(model, LAM, noise).holds([reference.x.numpy()], [solve_samples(model, noise, LAM, "sequential").x.numpy()])
    result = CachedSampler(shuffled, noise, LAM).run()
    assert cache_tolerance(shuffled, LAM, noise).holds([result.x.numpy()], [reference.x.numpy()])
    assert result.network_evaluations == pytest.approx(CachedSampler(model, noise, LAM).run().network_evaluations)


@pytest.mark.parametrize("hidden", [(5,), (3, 7, 4)])
def test_sequential_cache_takes_any_number_of_hidden_layers(hidden):
    torch.manual_seed(2)
    model = MADE(12, hidden).eval()
    noise = logistic_noise(3, 12, seed=1)
    reference = solve_samples(model, noise, LAM, "sequential").x.numpy()
    result = CachedSampler(model, noise, LAM).run()
    assert cache_tolerance(model, LAM, noise).holds([result.x.numpy()], [reference])
    assert result.network_evaluations == pytest.approx(_expected_share(12, list(hidden)), rel=1e-12)


def test_cache_tolerance_is_the_float32_samples_own_error_against_float64(trained):
    model, _ = trained
    noise = logistic_noise(16, 64, seed=11)
    tolerance = cache_tolerance(model, LAM, noise)
    sample = solve_samples(model, noise, LAM, "sequential").x
    exact = solve_samples(copy.deepcopy(model).double(), noise.double(), LAM, "sequential").x
    error = float((sample.double() - exact).abs().max())
    # CachedSampler (another order) computes the float64 reference; float64 rounding is far below.
    # e is floored at one float32 rounding of the largest sample, |logit(lambda)|.
    floor = 2.0 ** -24 * math.log((1 - LAM) / LAM)
    assert error > 0 and tolerance.atol == pytest.approx(4 * max(error, floor), rel=1e-6)
    assert tolerance.rtol == 0
    assert "float64" in tolerance.why and "16 samples of 64" in tolerance.why
    assert cache_tolerance(model, LAM, noise, sample=sample) == tolerance
    assert "16 samples" in cache_tolerance(model, LAM).why  # a probe batch without noise


class _OffByOne(CachedSampler):
    """``sequential_cache`` with one cache entry off by one position: writing dimension ``AT``
    folds it into the first-layer cache with the weight column of the next dimension."""

    AT = 20

    def step(self, x, cache, t):
        if t != self.AT:
            return super().step(x, cache, t)
        columns = self.columns
        self.columns = torch.cat([columns[:t], columns[t + 1:t + 2], columns[t + 1:]])
        try:
            super().step(x, cache, t)
        finally:
            self.columns = columns


def test_cache_tolerance_rejects_a_cache_entry_off_by_one_position(trained):
    model, _ = trained
    noise = logistic_noise(16, 64, seed=11)
    tolerance = cache_tolerance(model, LAM, noise)
    reference = solve_samples(model, noise, LAM, "sequential").x.numpy()
    assert tolerance.holds([CachedSampler(model, noise, LAM).run().x.numpy()], [reference])
    wrong = _OffByOne(model, noise, LAM).run().x.numpy()
    assert np.array_equal(wrong[:, :_OffByOne.AT + 1],
                          CachedSampler(model, noise, LAM).run().x.numpy()[:, :_OffByOne.AT + 1])
    assert not tolerance.holds([wrong], [reference])


def test_sequential_cache_run_records_its_tolerance_and_trace(trained):
    model, _ = trained
    noise = logistic_noise(4, 64, seed=5)
    found = measure(candidates(model, noise, LAM, run_specs(["sequential", "sequential_cache"], []),
                               snapshots=(0, 10), keep=2), repeats=2, warmup=0)
    cached = found["sequential_cache"]
    assert cached.candidate.tolerance == cache_tolerance(model, LAM, noise) and cached.within_tolerance
    # the recorded distance is the timed output's own, and the bound can fail: the sequential
    # samples with every dimension read one position late (a cache off by one) are refused
    sequential = found["sequential"].result.x
    assert cached.max_abs_diff == pytest.approx(float((cached.result.x.double() - sequential.double()).abs().max()))
    late = torch.cat([sequential[:, :1], sequential[:, :-1]], dim=1)
    assert not cached.candidate.tolerance.holds([late.numpy()], [sequential.numpy()])
    assert cached.stopped_by == "sequential" and cached.result.converged
    assert cached.candidate.extra["cache_setup_s"] >= 0
    trace = cached.trace
    assert trace["error_mean"].shape == (65,) and trace["error_mean"][-1] == 0
    assert trace["snapshot_iterations"].tolist() == [0, 10, 64]
    np.testing.assert_array_equal(trace["snapshots"][-1], cached.result.x[:2].numpy())
    # The iterates it passes through are sequential's, dimension by dimension (within rounding).
    np.testing.assert_allclose(trace["error_mean"], found["sequential"].trace["error_mean"], rtol=1e-4, atol=1e-4)


def test_train_then_measure_writes_one_valid_record_and_trace_per_run(tmp_path):
    save_prepared(load_digits_dataset(), tmp_path / "digits.npz")
    train = TrainSettings(hidden_sizes=(32,), logit_lambda=LAM,
                          train=Training(steps=4, batch=16, lr=1e-3, eval_every=2))
    record = experiment.train(train, data=tmp_path / "digits.npz", checkpoint=tmp_path / "model.pt",
                              record=tmp_path / "train.json", dataset="digits", seed=5, device="cpu")
    assert record["curve"]["step"] == [2, 4]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["metadata"]["logit_lambda"] == LAM
    assert json.loads((tmp_path / "train.json").read_text())["final_test_bpd"] > 0

    settings = MeasureSettings(hidden_sizes=(32,), logit_lambda=LAM,
                               methods=("sequential", "jacobi", "gs_jacobi"), block_sizes=(16, 7),
                               sample=Sampling(batch=6, tol=0.0, snapshot_every=2, snapshot_count=3, show=2))
    assert settings.runs == ["sequential", "jacobi", "gs_jacobi_b16", "gs_jacobi_b7"]
    metrics = {run: str(tmp_path / run / "metrics.json") for run in settings.runs}
    traces = {run: str(tmp_path / run / "trace.npz") for run in settings.runs}
    written = experiment.measure(settings, checkpoint=tmp_path / "model.pt", dataset="digits", seed=5,
                                 timing=TimingSettings(repeats=2, warmup=0), metrics=metrics, traces=traces,
                                 device="cpu", threads=1)
    assert sorted(written) == sorted(settings.runs)
    finals = []
    for run in settings.runs:
        rec = read_metrics(metrics[run])
        validate_record(rec, run)
        others = set(settings.runs) - {run}
        assert rec["experiment"] == "made" and rec["run"] == run and rec["dataset"] == "digits"
        assert rec["bitwise_equal"] is True and rec["max_abs_diff"] == 0
        assert rec["tolerance"] is None and rec["within_tolerance"] is None
        assert rec["stopped_by"] in ({"sequential"} if run == "sequential" else {"fixed_point", "exact_prefix"})
        assert 1 <= rec["iterations"] <= rec["sequence_length"] == 64
        assert rec["network_evaluations"] == rec["iterations"]
        assert set(rec["timing"]["interleaved_with"]) == others and len(rec["timing"]["times_s"]) == 2
        assert rec["hidden_sizes"] == [32] and rec["logit_lambda"] == LAM and rec["batch"] == 6
        assert rec["checkpoint"] == str(tmp_path / "model.pt") and rec["image_shape"] == [1, 8, 8]
        with np.load(traces[run]) as trace:
            assert trace["error_mean"].shape == (rec["iterations"] + 1,)
            assert trace["change_mean"].shape == (rec["iterations"],)
            assert trace["snapshots"].shape[1:] == (2, 64)
            assert trace["image_shape"].tolist() == [1, 8, 8]
            finals.append(trace["snapshots"][-1])
    assert read_metrics(metrics["sequential"])["iterations"] == 64
    for final in finals[1:]:  # same noise, same weights: the same samples
        np.testing.assert_array_equal(final, finals[0])


def test_measure_refuses_a_checkpoint_trained_with_another_lambda(tmp_path):
    from ffsolve.experiments.made.model import save_checkpoint

    save_checkpoint(MADE(64, [8]), tmp_path / "m.pt", {"logit_lambda": 0.05})
    settings = MeasureSettings(hidden_sizes=(8,), logit_lambda=LAM, methods=("sequential",), block_sizes=(8,),
                               sample=Sampling(batch=2, tol=0.0, snapshot_every=1, snapshot_count=1, show=1))
    with pytest.raises(SettingsError, match="made.per_dataset.digits.logit_lambda"):
        experiment.measure(settings, checkpoint=tmp_path / "m.pt", dataset="digits", seed=1,
                           timing=TimingSettings(1, 0), metrics={}, traces={}, device="cpu")
    assert not list(tmp_path.glob("**/metrics.json"))


def test_unusable_lambda_is_refused_naming_the_key():
    with pytest.raises(SettingsError, match="made.logit_lambda"):
        TrainSettings(hidden_sizes=(8,), logit_lambda=0.5, train=Training(1, 1, 1e-3, 1))


# ----------------------------------------------------------------- the config layout, the rules


def _layout_keys(name):
    from ffsolve.experiments.made import layout

    return {"MADE_TRAIN_KEYS": layout.TRAIN_KEYS, "MADE_MEASURE_KEYS": layout.MEASURE_KEYS}[name]


def test_rule_params_hold_exactly_what_each_job_reads():
    # the made rules (keys listed in made/layout.py) hand each job these keys of the dataset's settings; the jobs refuse any other.
    assert _layout_keys("MADE_TRAIN_KEYS") == tuple(f.name for f in fields(TrainSettings))
    assert _layout_keys("MADE_MEASURE_KEYS") == tuple(f.name for f in fields(MeasureSettings))


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_per_dataset_settings_give_each_dataset_its_lambda(configfile):
    section = yaml.safe_load((REPO / configfile).read_text())["made"]
    lambdas = {}
    for dataset in ("mnist", "cifar10"):
        merged = dataset_settings(section, dataset)
        settings = settings_from(MeasureSettings, {k: merged[k] for k in _layout_keys("MADE_MEASURE_KEYS")}, "made")
        settings_from(TrainSettings, {k: merged[k] for k in _layout_keys("MADE_TRAIN_KEYS")}, "made")
        lambdas[dataset] = settings.logit_lambda
        # The exact runs first (auto and the frontier runs at tol > 0 may follow).
        assert settings.runs[:5] == ["sequential", "sequential_cache", "jacobi", "gs_jacobi_b28", "gs_jacobi_b112"]
    assert lambdas == {"mnist": 1e-6, "cifar10": 0.05}  # the paper's values


def test_settings_refuse_unknown_and_missing_keys_naming_them():
    good = {"hidden_sizes": [8], "logit_lambda": LAM,
            "train": {"steps": 1, "batch": 1, "lr": 1e-3, "eval_every": 1}}
    with pytest.raises(SettingsError, match=r"'made.train' has unknown settings \['epochs'\]"):
        settings_from(TrainSettings, {**good, "train": {**good["train"], "epochs": 2}}, "made")
    with pytest.raises(SettingsError, match="'made.logit_lambda' is missing"):
        settings_from(TrainSettings, {k: v for k, v in good.items() if k != "logit_lambda"}, "made")


def test_windowed_runs_reuse_final_units_and_trace_their_work(trained):
    """suffix_jacobi and sliding_jacobi through the workflow's candidates: less work than jacobi
    (hidden units that read only final dimensions are kept), within cache_tolerance of sequential,
    and the traced twin records the work before each iterate (the figure's time axis)."""
    trained = trained[0]
    noise = logistic_noise(6, trained.nin, 3)
    runs = run_specs(["sequential", "jacobi", "suffix_jacobi", "sliding_jacobi"], [16])
    found = measure(candidates(trained, noise, LAM, runs), repeats=1)
    jacobi = found["jacobi"].result
    for name in ("suffix_jacobi", "sliding_jacobi_b16"):
        m = found[name]
        assert m.within_tolerance and m.result.converged, name
        assert m.result.iterations <= trained.nin
        assert m.result.network_evaluations < jacobi.network_evaluations, name
        cumulative = m.trace["cumulative_network_evaluations"]
        assert len(cumulative) == m.result.iterations + 1
        assert cumulative[-1] == pytest.approx(m.result.network_evaluations)
    # A map without reuse (a fresh SamplingWindow per call) would cost a full pass per suffix step.
    window = sampling_map(trained, noise, LAM)
    x = torch.zeros_like(noise)
    window.window(x, 0, trained.nin)
    full = window.window_cost(0, trained.nin)
    window.window(x, 10, trained.nin)
    assert window.window_cost(10, trained.nin) < full
