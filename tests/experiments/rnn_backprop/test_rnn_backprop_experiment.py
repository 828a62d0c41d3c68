"""The RNN backprop experiment as a job: settings, runs, data, the timed training of every run
(the paper's quantity: wall clock to train), its records and curves, and the figures.

Uses scikit-learn's 8×8 digits (T = 64), hidden 6, a few SGD steps.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from snakemake.utils import validate

from ffsolve.data import Dataset, save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments.rnn_backprop import experiment as rnn
from ffsolve.experiments.rnn_backprop import plots as rnn_plots
from ffsolve.experiments.rnn_backprop.model import RNNParams, load_checkpoint
from ffsolve.kit import RunSpec, SettingsError, read_metrics, settings_from, validate_record
from ffsolve.kit import save
from ffsolve.workflow.config import dataset_settings, merged_config

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "src" / "ffsolve" / "experiments" / "rnn_backprop" / "config.schema.yaml"

SECTION = {
    "methods": ["sequential", "jacobi", "jacobi_tol", "gs_jacobi", "scan_hillis_steele", "scan_odd_even"],
    "block_sizes": [8],
    "jacobi_budgets": [2, 100],
    "jacobi_tol": 1e-7,
    "image_size": None,  # digits stay 8×8: T = 64
    "hidden_size": 6,
    "init_std": 0.3,
    "batch": 2,
    "dtype": "float32",
    "lr": 1e-2,
    "steps": 6,
    "repeats": 2,
    "warmup_steps": 2,
    "ema_decay": 0.95,
    "convergence_points": 3,
}
RUNS = ["sequential", "jacobi_k2", "jacobi_k100", "jacobi", "jacobi_tol", "gs_jacobi_b8",
        "scan_hillis_steele", "scan_odd_even"]
SETTINGS = settings_from(rnn.MeasureSettings, SECTION, "rnn_backprop")


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    save_prepared(load_digits_dataset(), path)
    return path


def make_job(out: Path, data: Path, section=SECTION, runs=RUNS):
    """What the adapter reads of a Snakemake job: paths, params, threads, wildcards (no config)."""
    ns = types.SimpleNamespace
    outputs = ns(metrics=[str(out / r / "metrics.json") for r in runs],
                 traces=[str(out / r / "trace.npz") for r in runs], weights=str(out / "trained_weights.npz"))
    return ns(input=ns(dataset=str(data)), output=outputs,
              params=ns(settings=section, runs=runs, timing={"threads": 1}, seed=7, device="cpu"),
              threads=1, wildcards=ns(dataset="digits"))


@pytest.fixture(scope="module")
def measured(tmp_path_factory, digits_npz):
    out = tmp_path_factory.mktemp("measure")
    return out, rnn.measure_job(make_job(out, digits_npz))


def curves(out: Path, run: str) -> dict:
    with np.load(out / run / "trace.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


def test_runs_follow_the_config():
    from ffsolve.experiments.rnn_backprop import configured_runs

    assert [r.name for r in rnn.runs(SETTINGS)] == RUNS
    # The rules expand the same runs without importing torch.
    assert configured_runs(SECTION["methods"], SECTION["block_sizes"], SECTION["jacobi_budgets"]) == RUNS
    only = dataclasses.replace(SETTINGS, methods=("jacobi",), jacobi_budgets=(10, 20))
    assert [r.name for r in rnn.runs(only)] == ["jacobi_k10", "jacobi_k20", "jacobi"]


def test_settings_refuse_missing_and_unknown_keys():
    with pytest.raises(SettingsError, match="rnn_backprop.hidden_size' is missing"):
        settings_from(rnn.MeasureSettings, {k: v for k, v in SECTION.items() if k != "hidden_size"}, "rnn_backprop")
    with pytest.raises(SettingsError, match="unknown settings \\['scan_algorithms'\\]"):
        settings_from(rnn.MeasureSettings, {**SECTION, "scan_algorithms": ["odd_even"]}, "rnn_backprop")


def test_schema_refuses_unknown_and_mistyped_keys():
    schema = str(SCHEMA)
    validate({**SECTION, "datasets": ["mnist"]}, schema=schema)
    with pytest.raises(Exception, match="hiden_size"):
        validate({**SECTION, "hiden_size": 8}, schema=schema)
    with pytest.raises(Exception, match="scan_blelloch"):
        validate({**SECTION, "methods": ["scan_blelloch"]}, schema=schema)
    with pytest.raises(Exception, match="dataset"):
        validate({**SECTION, "dataset": "mnist"}, schema=schema)  # the old single key


def test_every_config_gives_valid_typed_settings():
    for name in ("config/config.yaml", "config/paper.yaml", "tests/workflow/e2e/config.yaml"):
        # as the workflow sees it: merged over config/config.yaml, which sets every key
        section = merged_config(name, REPO)["rnn_backprop"]
        validate(section, schema=str(SCHEMA))
        for dataset in section["datasets"]:
            settings = settings_from(rnn.MeasureSettings, dataset_settings(section, dataset), "rnn_backprop")
            assert "sequential" in settings.methods, name


def test_mnist_is_resized_to_t_100():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 255
    dataset = Dataset("mnist", images, np.zeros(2, np.int64), images[:1], np.zeros(1, np.int64), "test")
    rows = rnn.dataset_sequences(dataset, "train", 10)
    assert rows.shape == (2, 100)
    assert 0.0 <= float(rows.min()) and float(rows.max()) <= 1.0
    square = rows[0].reshape(10, 10)
    assert float(square[4:6, 4:6].min()) > 0.9 and float(square[0, 0]) == 0.0


def test_batch_indices_cover_every_item_once_per_epoch():
    order = rnn.batch_indices(10, steps=7, batch=3, generator=torch.Generator().manual_seed(0))
    assert order.shape == (7, 3)
    assert sorted(order.reshape(-1)[:10].tolist()) == list(range(10))


def test_measure_writes_one_valid_training_record_per_run_from_one_session(measured):
    out, records = measured
    assert list(records) == RUNS
    sessions = set()
    for run in RUNS:
        record = read_metrics(out / run / "metrics.json")
        validate_record(record)
        assert record["run"] == run and record["quantity"] == "train_6_steps"
        assert record["sequence_length"] == 64 and record["batch"] == 2 and record["steps"] == 6
        assert 1 <= record["iterations"] <= 63  # the most parallel steps of one backward pass
        assert record["timing"]["repeats"] == 2 and record["timing"]["calls_per_repeat"] == 1
        assert record["warmup_steps"] == 2
        assert sorted(record["timing"]["interleaved_with"]) == sorted(set(RUNS) - {run})
        sessions.add(record["timing"]["session"])
        trace = curves(out, run)
        assert trace["loss"].shape == trace["ema_loss"].shape == trace["backward_iterations"].shape == (6,)
        assert trace["time_s"].shape == (2, 6) and np.all(np.diff(trace["time_s"], axis=1) > 0)
        assert int(trace["iterations"]) == record["iterations"] == trace["backward_iterations"].max()
        assert record["backward_iterations_mean"] == pytest.approx(trace["backward_iterations"].mean())
        # The record's time is the harness's clock around the whole training; the curve's clock
        # runs inside it, so its last step is a little earlier.
        assert trace["time_s"][:, -1].max() <= record["timing"]["max_s"]
    assert len(sessions) == 1


def test_exact_runs_train_bitwise_the_weights_of_bptt_and_truncated_ones_do_not(measured, digits_npz):
    out, records = measured
    for run in ("sequential", "jacobi", "jacobi_k100", "gs_jacobi_b8"):
        assert records[run]["bitwise_equal"] and records[run]["converged"], run
        assert records[run]["tolerance"] is None and records[run]["max_abs_diff"] == 0
        assert records[run]["final_ema_loss_gap"] == 0.0, run
        assert records[run]["gradient_rel_error_vs_autograd"] < 1e-10, run
        np.testing.assert_array_equal(curves(out, run)["loss"], curves(out, "sequential")["loss"])
    truncated = records["jacobi_k2"]
    assert truncated["iterations"] == 2 and not truncated["converged"]
    assert not truncated["bitwise_equal"] and truncated["max_abs_diff"] > 0
    assert truncated["final_ema_loss_gap"] != 0 and truncated["gradient_rel_error_vs_autograd"] > 1e-3
    assert records["jacobi_k100"]["iterations"] < 63  # stops once the adjoints stop changing
    assert records["jacobi_tol"]["relative_tol"] == 1e-7 and records["jacobi_tol"]["tol"] == 1e-7
    assert records["jacobi_tol"]["backward_iterations_mean"] <= records["jacobi"]["backward_iterations_mean"]
    assert records["scan_hillis_steele"]["iterations"] == 6 and records["sequential"]["iterations"] == 63
    # What stopped each run's backward passes: the loop, the step budget, the tolerance, the
    # scans' depth bound; exact Jacobi by a fixed point or the T-step bound, pass by pass.
    assert truncated["stopped_by"] == "budget" and truncated["backward_stopped_by"] == {"budget": 6}
    assert records["sequential"]["stopped_by"] == "sequential"
    assert records["jacobi_tol"]["stopped_by"] == "tolerance"
    assert records["scan_hillis_steele"]["stopped_by"] == records["scan_odd_even"]["stopped_by"] == "exact_prefix"
    for run in ("jacobi", "jacobi_k100", "gs_jacobi_b8"):
        assert records[run]["stopped_by"] in ("fixed_point", "exact_prefix"), run
        assert sum(records[run]["backward_stopped_by"].values()) == 6, run
    # The checkpoint is BPTT's trained weights, the output the harness compared.
    trained = load_checkpoint(out / "trained_weights.npz")
    initial = rnn.initial_params(SETTINGS, 7, "digits", 0)
    assert not torch.equal(trained.W_h, initial.W_h)


def test_scans_are_held_to_a_stated_tolerance_tighter_than_what_training_moves(measured):
    out, records = measured
    trained = load_checkpoint(out / "trained_weights.npz")
    moved = float((trained.flat() - rnn.initial_params(SETTINGS, 7, "digits", 0).flat()).abs().max())
    for run in ("scan_hillis_steele", "scan_odd_even"):
        record = records[run]
        assert record["within_tolerance"] is True and record["converged"], run
        assert "reassociate" in record["tolerance"]["why"] and "steps=6" in record["tolerance"]["why"]
        assert record["max_abs_diff"] <= record["tolerance"]["atol"]
        # Not vacuous: a weight that moved by less than 1 % of the training's largest move fails.
        assert record["tolerance"]["atol"] < 0.01 * moved, (record["tolerance"]["atol"], moved)


def test_training_tolerance_rejects_a_one_percent_gradient_error_and_a_jacobi_one_step_early(monkeypatch):
    """The scans' bound on trained weights is twice BPTT's own float32 training error against the
    same training in float64. On 3×3 digits (T = 9, coupled strongly enough that every step of
    the adjoints matters) the scans' trainings pass it, and two wrong trainings fail it: every
    gradient 1 % too large, and every backward pass a Jacobi stopped one step before its
    gradients are BPTT's."""
    settings = settings_from(rnn.MeasureSettings, {**SECTION, "image_size": 3, "init_std": 0.8}, "rnn_backprop")
    data = rnn.dataset_sequences(load_digits_dataset(), "train", 3).float()
    params = rnn.initial_params(settings, 7, "digits", 0)
    order = rnn.training_order(settings, data.shape[0], 7, "digits")

    def trained(spec="sequential"):
        return rnn.params_of(rnn.train_run(params, data, order, RunSpec(spec), settings)[0])

    def arrays(weights):
        return [t.numpy() for t in weights.tensors()]

    reference = trained()
    tolerance = rnn.training_tolerance(settings, params, data, order, reference)
    exact = rnn.params_of(rnn.train_run(params.to(dtype=torch.float64), data.double(), order,
                                    RunSpec("sequential"),
                                    dataclasses.replace(settings, dtype="float64"))[0])
    error = float((reference.flat().double() - exact.flat()).abs().max())
    assert error > 0 and tolerance.atol == pytest.approx(2 * error) and tolerance.rtol == 0
    assert "float64" in tolerance.why and "steps=6" in tolerance.why
    assert tolerance == rnn.training_tolerance(settings, params, data, order)  # trains BPTT itself
    for scan in ("scan_hillis_steele", "scan_odd_even"):
        weights = trained(scan)
        assert not torch.equal(weights.flat(), reference.flat())  # they differ, by rounding
        assert tolerance.holds(arrays(weights), arrays(reference)), scan

    original = rnn.backward

    def one_percent(*args, **kwargs):
        result = original(*args, **kwargs)
        result.grads = RNNParams(*(g * 1.01 for g in result.grads.tensors()))
        return result

    def one_step_early(params, cache, spec, relative_tol=0.0):
        full = original(params, cache, RunSpec("jacobi"))
        exact_from = next(k for k in range(1, full.solve.iterations + 1) if all(
            torch.equal(a, b) for a, b in zip(
                original(params, cache, RunSpec("jacobi", budget=k)).grads.tensors(),
                full.grads.tensors())))
        assert exact_from > 1
        return original(params, cache, RunSpec("jacobi", budget=exact_from - 1))

    for wrong in (one_percent, one_step_early):
        monkeypatch.setattr(rnn, "backward", wrong)
        weights = trained()
        monkeypatch.setattr(rnn, "backward", original)
        assert not tolerance.holds(arrays(weights), arrays(reference)), wrong.__name__


def test_time_to_target_is_read_off_the_timed_curves(measured):
    out, records = measured
    target = records["sequential"]["final_ema_loss"]
    for run in RUNS:
        record, trace = records[run], curves(out, run)
        assert record["target_ema_loss"] == target
        assert record["final_ema_loss"] == pytest.approx(trace["ema_loss"][-1])
        np.testing.assert_allclose(trace["ema_loss"], rnn.ema(trace["loss"], 0.95))
        reached = np.flatnonzero(trace["ema_loss"] <= target)
        if reached.size:
            assert record["target_step"] == reached[0] + 1
            assert record["time_to_target_s"] == float(np.median(trace["time_s"][:, reached[0]]))
        else:
            assert record["target_step"] is None and record["time_to_target_s"] is None
    assert records["sequential"]["target_step"] is not None
    assert records["jacobi"]["target_step"] == records["sequential"]["target_step"]


def test_ema_and_first_reach():
    np.testing.assert_allclose(rnn.ema(np.array([1.0, 3.0, 3.0]), 0.5), [1.0, 2.0, 2.5])
    assert rnn.first_reach(np.array([3.0, 2.0, 1.0, 0.5]), 1.0) == 2
    assert rnn.first_reach(np.array([3.0, 2.0]), 1.0) is None


def test_measure_is_deterministic(tmp_path, digits_npz, measured):
    _, records = measured
    again = rnn.measure_job(make_job(tmp_path, digits_npz))
    for run in RUNS:
        for key in ("iterations", "max_abs_diff", "bitwise_equal", "network_evaluations",
                    "final_ema_loss", "target_step"):
            assert again[run][key] == records[run][key], (run, key)


def test_bptt_is_required_and_a_diverging_run_fails_with_advice(tmp_path, digits_npz):
    section = {**SECTION, "methods": ["jacobi"], "jacobi_budgets": []}
    with pytest.raises(ValueError, match="must include 'sequential'"):
        rnn.measure_job(make_job(tmp_path, digits_npz, section, ["jacobi"]))
    section = {**SECTION, "methods": ["sequential"], "lr": 1e6, "init_std": 3.0, "steps": 20}
    with pytest.raises(FloatingPointError, match="lower rnn_backprop.lr"):
        rnn.measure_job(make_job(tmp_path, digits_npz, section, ["sequential"]))


@pytest.fixture(scope="module")
def convergence(measured, digits_npz):
    out, _ = measured
    ns = types.SimpleNamespace
    rnn.convergence_job(ns(
        input=ns(dataset=str(digits_npz), weights=str(out / "trained_weights.npz")),
        output=ns(convergence=str(out / "convergence.npz")),
        params=ns(settings=SECTION, seed=7, device="cpu"), threads=1, wildcards=ns(dataset="digits")))
    return out / "convergence.npz"


def test_convergence_traces(convergence):
    with np.load(convergence) as traces:
        assert int(traces["sequence_length"]) == 64
        for phase in ("begin", "end"):
            gs, jac = traces[f"{phase}_sequential"], traces[f"{phase}_jacobi"]
            scan = traces[f"{phase}_scan_hillis_steele"]
            assert gs.shape == (65, 3) and jac.shape[0] <= 65 and scan.shape == (7, 3)
            assert np.all(gs[-1] < 1e-10) and np.all(jac[-1] < 1e-10) and np.all(scan[-1] < 1e-10)
            assert np.all(gs[0] > 1e-6)  # zero adjoints are far from the gradient
        # begin and end differ: the end phase reads BPTT's trained weights
        assert not np.array_equal(traces["begin_sequential"], traces["end_sequential"])


def test_figures_and_table(tmp_path, measured, convergence):
    out, _ = measured
    runs = rnn_plots.load_runs([str(out / r / "metrics.json") for r in RUNS],
                               [str(out / r / "trace.npz") for r in RUNS])
    for against in ("time", "step"):
        save(rnn_plots.loss_figure(runs, against=against), str(tmp_path / f"{against}.png"))
    save(rnn_plots.convergence_figure(str(convergence)), str(tmp_path / "convergence.png"))
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in ("time", "step", "convergence"))
    labels = {r["run"]: rnn_plots.run_label(r) for r in runs}
    assert labels["jacobi_k2"].endswith("[approx.]") and not labels["jacobi"].endswith("[approx.]")
    assert not labels["scan_odd_even"].endswith("[approx.]")
    table = rnn_plots.markdown_table(runs)
    assert "| jacobi_k2 | never |" in table and "| sequential |" in table
    assert table.count("\n") >= 2 * len(runs) + 3
