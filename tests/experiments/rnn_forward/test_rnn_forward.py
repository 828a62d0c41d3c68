"""rnn_forward: case names, weights, checkpoints, next-pixel training that beats the network-free
baselines, and a tiny measured case whose records validate and whose exact runs equal the loop
bit for bit; the figures draw from them."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ffsolve
from ffsolve.data import Dataset, save_prepared
from ffsolve.experiments.rnn_forward import run_names, system
from ffsolve.experiments.rnn_forward.cases import (
    baseline_bits_per_pixel,
    parse_case,
    pixel_sequences,
    random_case_arrays,
    random_weights,
)
from ffsolve.experiments.rnn_forward.experiment import (
    MeasureSettings,
    TrainSettings,
    measure,
)
from ffsolve.experiments.rnn_forward import experiment as rnn_experiment
from ffsolve.experiments.rnn_forward.model import (
    CheckpointError,
    NextPixelGRU,
    load_checkpoint,
    save_checkpoint,
)
from ffsolve.kit import SettingsError, read_metrics, settings_from, validate_record
from ffsolve.kit.harness import TimingSettings

REPO = Path(__file__).resolve().parents[3]


def test_case_names_parse_and_bad_names_name_the_key():
    case = parse_case("gru_T1000_H8_jax")
    assert (case.cell, case.length, case.hidden, case.framework) == ("gru", 1000, 8, "jax")
    mnist = parse_case("mnist", hidden_size=12)
    assert (mnist.length, mnist.hidden, mnist.framework, mnist.trained) == (784, 12, "torch", True)
    for bad in ("lstm_T10_H2", "gru_T0_H8", "gru_T10", "gru_T10_H8_torch"):
        with pytest.raises(ValueError, match="rnn_forward.datasets"):
            parse_case(bad)


def test_configured_cases_and_the_schema_pattern_agree_with_the_parser():
    schema = yaml.safe_load((REPO / "src/ffsolve/experiments/rnn_forward/config.schema.yaml").read_text())
    pattern = schema["properties"]["datasets"]["items"]["pattern"]
    for cfg in ("config/config.yaml", "config/paper.yaml", "tests/workflow/e2e/config.yaml"):
        for name in yaml.safe_load((REPO / cfg).read_text()).get("rnn_forward", {}).get("datasets", []):
            assert re.match(pattern, name), name
            parse_case(name)


def test_frontier_runs_add_each_parallel_method_at_each_positive_tol():
    names = run_names(["sequential", "jacobi", "newton"], [0.0, 1e-4])
    assert names == ["sequential", "jacobi", "newton", "jacobi_t1e-04", "newton_t1e-04"]


def test_random_weights_are_seeded_framework_free_and_contracting():
    case = parse_case("softplus_T20_H6")
    (w1, u1), (w2, u2) = (random_case_arrays(case, batch=2, input_size=3, seed=5) for _ in range(2))
    assert all(np.array_equal(w1[k], w2[k]) for k in w1) and np.array_equal(u1, u2)
    w_jax, u_jax = random_case_arrays(parse_case("softplus_T20_H6_jax"), batch=2, input_size=3, seed=5)
    assert all(np.array_equal(w1[k], w_jax[k]) for k in w1) and np.array_equal(u1, u_jax)
    assert np.linalg.norm(w1["W"].astype(np.float64), 2) == pytest.approx(0.9, rel=1e-5)
    gru = random_weights("gru", 4, 2, seed=1)
    assert gru["weight_hh"].shape == (12, 4) and np.abs(gru["weight_hh"]).max() <= 0.5
    with pytest.raises(ValueError, match="softplus_radius"):
        random_weights("softplus", 4, 2, seed=1, radius=1.2)


def test_pixel_sequences_are_binarized_raster_order_shifted_by_one():
    images = (np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) * 7 % 256).astype(np.uint8)
    inputs, targets = pixel_sequences(images)
    assert inputs.shape == (784, 2, 1) and targets.shape == (784, 2)
    assert inputs.dtype == targets.dtype == np.float32
    assert set(np.unique(targets)) == {0.0, 1.0}
    assert targets[29, 1] == float(images[1, 1, 1] > 127)  # raster order, time-major
    assert inputs[0, 1, 0] == 0.0 and np.array_equal(inputs[1:, :, 0], targets[:-1])  # u_t = x_{t-1}


def test_baselines_are_the_entropies_of_their_predictors():
    images = np.zeros((4, 28, 28), np.uint8)
    images[:2, :14] = 255  # position-dependent: the top half is on in half the images
    base = baseline_bits_per_pixel(images, images)
    # constant: p = (784 + 1) / (3136 + 2) ~ 1/4 everywhere; marginal: 1/2 on the top half, 1/6 below
    p = 785 / 3138
    assert base["constant"] == pytest.approx(-(0.25 * np.log2(p) + 0.75 * np.log2(1 - p)))
    q = 1 / 6  # (0 + 1) / (4 + 2) on the bottom half, exactly 1/2 on the top half
    assert base["pixel_marginal"] == pytest.approx(0.5 * 1.0 + 0.5 * -np.log2(1 - q))


def test_checkpoint_round_trips_and_refuses_another_size(tmp_path):
    torch.manual_seed(0)
    model = NextPixelGRU(5)
    save_checkpoint(model, tmp_path / "m.pt", {"steps": 1})
    loaded, metadata = load_checkpoint(tmp_path / "m.pt", hidden_size=5)
    x = torch.rand(30, 2, 1)
    assert torch.equal(model(x), loaded(x)) and metadata == {"steps": 1}
    with pytest.raises(CheckpointError, match="rnn_forward.hidden_size"):
        load_checkpoint(tmp_path / "m.pt", hidden_size=6)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_library_cell_on_trained_weights_is_torch_gru():
    """The weights handed to the library cell give torch.nn.GRU's states (other kernels: close,
    not bitwise; float32, values of order 1, so 1e-5)."""
    torch.manual_seed(0)
    model = NextPixelGRU(4)
    inputs = torch.rand(50, 3, 1)
    expected, _ = model.gru(inputs)
    case = parse_case("mnist", hidden_size=4)
    run = system.candidates(case, model.cell_weights(), inputs.numpy(), ["sequential"])[0]
    torch.testing.assert_close(run.program().x, expected.detach(), atol=1e-5, rtol=1e-5)


def test_every_framework_covers_every_recurrence_method():
    groups = system.contract_candidates()
    for framework_group in ("gru_T32_H4", "gru_T32_H4_jax"):
        methods = {c.spec.method for c in groups[framework_group]}
        assert methods == set(ffsolve.available_recurrence_methods()) | {system.NATIVE}, framework_group


@pytest.mark.parametrize("name", ["gru_T32_H4", "gru_T32_H4_jax", "softplus_T24_H4"])
def test_the_native_kernel_is_the_loop_within_its_derived_tolerance(name):
    """sequential_native (torch.nn.GRU, a jitted lax.scan, or a plain loop) gives the loop's states
    within a tolerance derived from float32 against float64, and that tolerance rejects states
    one time step off."""
    from ffsolve.experiments.rnn_forward.cases import random_case_arrays
    from ffsolve.kit.harness import to_numpy_leaves

    case = parse_case(name)
    weights, inputs = random_case_arrays(case, batch=3, input_size=3, seed=7)
    loop, native = system.candidates(case, weights, inputs, ["sequential", system.NATIVE])
    want = to_numpy_leaves(loop.program().x)[0]
    got = to_numpy_leaves(native.program().x)[0]
    assert native.tolerance is not None and native.tolerance.holds([got], [want])
    assert native.tolerance.atol < 1e-4  # about float32 rounding, not a loose bound
    shifted = np.concatenate([np.zeros_like(got[:1]), got[:-1]])  # one step late
    assert not native.tolerance.holds([shifted], [want])


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """28×28 uint8 images whose rows are each all on or all off at random: every position is on
    in half the images (the per-pixel marginal predicts 1 bit per pixel), but within a row each
    pixel repeats the one before (a GRU that learns to copy its input predicts far better)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 80)
    images = np.repeat(np.where(rng.random((80, 28, 1)) < 0.5, 240, 10), 28, axis=2).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    save_prepared(Dataset("mnist", images[:60], labels[:60], images[60:], labels[60:], "test"), path)
    return path


@pytest.fixture(scope="module")
def measured(fake_mnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("rnn_forward")
    train = settings_from(TrainSettings, {"hidden_size": 3, "train": {
        "steps": 2, "batch": 8, "lr": 3e-3, "eval_every": 1, "test_images": 10}}, "rnn_forward")
    record = rnn_experiment.train(train, data=fake_mnist, checkpoint=root / "model.pt",
                                  record=root / "train.json", seed=3, device="cpu")
    settings = settings_from(MeasureSettings, {
        "hidden_size": 3, "methods": ["sequential", "jacobi", "newton", "quasi_newton", "auto"],
        "frontier_tols": [0.0, 1e-3], "batch": 2, "input_size": 2, "softplus_radius": 0.9,
        "damping": 1.0}, "rnn_forward")
    runs = settings.runs
    records = measure(
        settings, dataset="mnist", seed=3, timing=TimingSettings(repeats=1, warmup=0),
        metrics={r: root / r / "metrics.json" for r in runs}, traces={r: root / r / "trace.npz" for r in runs},
        device="cpu", checkpoint=root / "model.pt", data=fake_mnist)
    return root, record, records, runs


def test_training_writes_a_curve_and_a_loadable_checkpoint(measured):
    root, record, _, _ = measured
    assert record["curve"]["step"] == [1, 2] and record["final_test_bits_per_pixel"] > 0
    assert json.loads((root / "train.json").read_text())["hidden_size"] == 3
    _, metadata = load_checkpoint(root / "model.pt", hidden_size=3)
    assert metadata["final_test_bits_per_pixel"] == record["final_test_bits_per_pixel"]


def test_brief_training_beats_the_network_free_baselines(fake_mnist, tmp_path):
    """Twenty steps over the full T = 784 (a loss at every step) must beat the per-pixel
    marginal (1 bit per pixel on these images) by a wide margin."""
    train = settings_from(TrainSettings, {"hidden_size": 4, "train": {
        "steps": 20, "batch": 8, "lr": 3e-2, "eval_every": 20, "test_images": 20}}, "rnn_forward")
    record = rnn_experiment.train(train, data=fake_mnist, checkpoint=tmp_path / "model.pt",
                                  record=tmp_path / "train.json", seed=3, device="cpu")
    base = record["baseline_bits_per_pixel"]
    assert base["pixel_marginal"] == pytest.approx(1.0, abs=0.05)
    assert record["final_test_bits_per_pixel"] < 0.5 * base["pixel_marginal"], record["curve"]


def test_measured_case_records_validate_and_exact_runs_are_bitwise(measured):
    root, _, records, runs = measured
    assert runs == ["sequential", "jacobi", "newton", "quasi_newton", "auto",
                    "jacobi_t1e-03", "newton_t1e-03", "quasi_newton_t1e-03"]
    sessions = set()
    for run in runs:
        rec = read_metrics(root / run / "metrics.json")
        validate_record(rec, run)
        sessions.add(rec["timing"]["session"])
        assert rec["sequence_length"] == 784 and rec["hidden_size"] == 3 and rec["cell"] == "gru"
        assert 1 <= rec["iterations"] <= 784
        assert rec["bits_per_pixel"] > 0 and rec["task"] == "next_pixel_binarized"
        if rec["tol"] == 0:
            assert rec["bitwise_equal"] and rec["converged"], run
            assert rec["bits_per_pixel_minus_sequential"] == 0.0
        else:
            assert rec["max_abs_diff"] <= 0.1, run  # a tolerance stop is close, not exact
        if run == "auto":  # exact: whatever it chose must give the loop's bits
            assert rec["auto"]["chosen"] in runs and rec["auto"]["first_call_s"] > 0
            assert rec["auto"]["decided_by"] == "pilot" and rec["auto"]["key"]["problem"]["dataset"] == "mnist"
        with np.load(root / run / "trace.npz") as trace:
            if run not in ("sequential", "auto"):
                assert len(trace["error_max"]) == rec["iterations"] + 1
                assert trace["error_to_final"][-1] == 0.0
    assert len(sessions) == 1
    assert records["newton"]["iterations"] <= records["jacobi"]["iterations"] <= 784


def test_bad_settings_name_the_key():
    with pytest.raises(SettingsError, match="rnn_forward.batch"):
        settings_from(MeasureSettings, {"hidden_size": 3, "methods": ["sequential"], "frontier_tols": [],
                                        "batch": "two", "input_size": 1, "softplus_radius": 0.9, "damping": 1.0},
                      "rnn_forward")


def test_figures_and_table_draw_from_the_records(measured, tmp_path):
    from ffsolve.kit import plots
    from ffsolve.experiments.rnn_forward import plots as rnn_plots

    root, _, _, runs = measured
    loaded = plots.load_runs([root / r / "metrics.json" for r in runs], [root / r / "trace.npz" for r in runs])
    plots.save(rnn_plots.convergence_figure(loaded), str(tmp_path / "a.png"))
    plots.save(rnn_plots.frontier_figure(loaded), str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
    table = rnn_plots.markdown_table(loaded, rnn_plots.load_training(str(root / "train.json")))
    assert "| mnist | gru | 784 | 3 | torch | newton_t1e-03 |" in table
    assert "| sequential | " in table and "bits per pixel on the batch" in table
    assert "for the per-pixel marginal" in table
    assert "mnist auto: chose " in table


@pytest.mark.parametrize("name", ["gru_T32_H4", "gru_T32_H4_jax"])
def test_only_a_twin_that_runs_the_timed_code_is_the_warm_up(name):
    """PyTorch's traced solve runs the timed program's eager operations, so it warms the program
    up; JAX's traced solve is another program than the compiled one, so the harness must still
    call the program itself first. The native kernel's twin is one call of the program in both.
    Whichever it is, the twin gives the program's states bit for bit."""
    from ffsolve.experiments.rnn_forward.cases import random_case_arrays
    from ffsolve.kit.harness import to_numpy_leaves

    case = parse_case(name)
    weights, inputs = random_case_arrays(case, batch=2, input_size=3, seed=5)
    loop, jacobi, native = system.candidates(case, weights, inputs, ["sequential", "jacobi", system.NATIVE])
    torch_case = case.framework == "torch"
    assert (loop.traced_warms_up, jacobi.traced_warms_up, native.traced_warms_up) == (
        torch_case, torch_case, True)
    for candidate in (loop, jacobi, native):
        twin, _ = candidate.traced()
        assert np.array_equal(to_numpy_leaves(twin.x)[0], to_numpy_leaves(candidate.program().x)[0])
