"""The RNN backprop experiment as jobs: settings, runs, data, the measure job, training and figures.

Uses scikit-learn's 8×8 digits (T = 64), hidden 6, a few SGD steps.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate

from ffsolve.data import Dataset, save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments.rnn_backprop import experiment as rnn
from ffsolve.experiments.rnn_backprop import plots as rnn_plots
from ffsolve.kit import SettingsError, read_metrics, settings_from, validate_record
from ffsolve.plots import save
from ffsolve.workflow_config import dataset_settings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "rnn_backprop.schema.yaml"

SECTION = {
    "methods": ["sequential", "jacobi", "jacobi_tol", "gs_jacobi", "scan_hillis_steele", "scan_odd_even"],
    "block_sizes": [8],
    "jacobi_budgets": [2, 100],
    "jacobi_tol": 1e-7,
    "image_size": None,  # digits stay 8×8: T = 64
    "hidden_size": 6,
    "init_std": 0.3,
    "batch_size": 2,
    "dtype": "float32",
    "lr": 1e-2,
    "steps": 4,
    "repeats": 2,
    "ema_decay": 0.95,
    "convergence_points": 3,
}
RUNS = ["sequential", "jacobi_k2", "jacobi_k100", "jacobi", "jacobi_tol", "gs_jacobi_b8",
        "scan_hillis_steele", "scan_odd_even"]
SETTINGS = settings_from(rnn.Settings, SECTION, "rnn_backprop")
TIMING = {"repeats": 2, "warmup": 1}


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    save_prepared(load_digits_dataset(), path)
    return path


def make_job(out: Path, data: Path, outputs: dict, section=SECTION):
    """What the adapters read of a Snakemake job: paths, params, threads, wildcards (no config)."""
    ns = types.SimpleNamespace
    return ns(input=ns(dataset=str(data)), output=ns(**outputs),
              params=ns(settings=section, runs=RUNS, timing=TIMING, seed=7, device="cpu"),
              threads=1, wildcards=ns(dataset="digits"))


@pytest.fixture(scope="module")
def measured(tmp_path_factory, digits_npz):
    out = tmp_path_factory.mktemp("measure")
    job = make_job(out, digits_npz, {
        "metrics": [str(out / r / "metrics.json") for r in RUNS],
        "traces": [str(out / r / "trace.npz") for r in RUNS]})
    return out, rnn.measure_job(job)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_npz):
    out = tmp_path_factory.mktemp("train")
    job = make_job(out, digits_npz, {
        "training": [str(out / r / "training.npz") for r in RUNS],
        "weights": str(out / "trained_weights.npz"), "convergence": str(out / "convergence.npz")})
    rnn.train_job(job)
    return out


def test_runs_follow_the_config():
    from ffsolve.experiments.rnn_backprop import configured_runs

    assert [r.name for r in rnn.runs(SETTINGS)] == RUNS
    # The rules expand the same runs without importing torch.
    assert configured_runs(SECTION["methods"], SECTION["block_sizes"], SECTION["jacobi_budgets"]) == RUNS
    only = dataclasses.replace(SETTINGS, methods=("jacobi",), jacobi_budgets=(10, 20))
    assert [r.name for r in rnn.runs(only)] == ["jacobi_k10", "jacobi_k20", "jacobi"]


def test_settings_refuse_missing_and_unknown_keys():
    with pytest.raises(SettingsError, match="rnn_backprop.hidden_size' is missing"):
        settings_from(rnn.Settings, {k: v for k, v in SECTION.items() if k != "hidden_size"}, "rnn_backprop")
    with pytest.raises(SettingsError, match="unknown settings \\['scan_algorithms'\\]"):
        settings_from(rnn.Settings, {**SECTION, "scan_algorithms": ["odd_even"]}, "rnn_backprop")


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
    for name in ("config/config.yaml", "config/paper.yaml", "tests/e2e/config.yaml"):
        section = yaml.safe_load((REPO / name).read_text())["rnn_backprop"]
        validate(section, schema=str(SCHEMA))  # fills the defaults
        for dataset in section["datasets"]:
            settings = settings_from(rnn.Settings, dataset_settings(section, dataset), "rnn_backprop")
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


def test_measure_writes_one_valid_record_per_run_from_one_session(measured):
    out, records = measured
    assert list(records) == RUNS
    sessions = set()
    for run in RUNS:
        record = read_metrics(out / run / "metrics.json")
        validate_record(record)
        assert record["run"] == run and record["sequence_length"] == 64 and record["batch"] == 2
        assert 1 <= record["iterations"] <= 64
        assert sorted(record["timing"]["interleaved_with"]) == sorted(set(RUNS) - {run})
        sessions.add(record["timing"]["session"])
        with np.load(out / run / "trace.npz") as trace:
            assert int(trace["iterations"]) == record["iterations"]
            if "error" in trace.files:  # distance to the final adjoints, 0 at the end
                assert trace["error"].shape == (record["iterations"] + 1,) and trace["error"][-1] == 0
    assert len(sessions) == 1


def test_exact_runs_are_bitwise_truncated_are_not_and_scans_within_their_bound(measured):
    _, records = measured
    for run in ("sequential", "jacobi", "jacobi_k100", "gs_jacobi_b8"):
        assert records[run]["bitwise_equal"] and records[run]["converged"], run
        assert records[run]["tolerance"] is None and records[run]["max_abs_diff"] == 0
        assert records[run]["gradient_rel_error_vs_autograd"] < 1e-10, run
    truncated = records["jacobi_k2"]
    assert truncated["iterations"] == 2 and not truncated["converged"]
    assert not truncated["bitwise_equal"] and truncated["max_abs_diff"] > 0
    assert truncated["gradient_rel_error_vs_autograd"] > 1e-3
    assert records["jacobi_k100"]["iterations"] < 64  # stops once the adjoints stop changing
    assert records["jacobi_tol"]["converged"] and records["jacobi_tol"]["relative_tol"] == 1e-7
    assert records["jacobi_tol"]["tol"] > 0
    assert records["jacobi_tol"]["iterations"] <= records["jacobi"]["iterations"]
    for run in ("scan_hillis_steele", "scan_odd_even"):
        assert records[run]["within_tolerance"] is True and records[run]["converged"]
        assert "reassociated" in records[run]["tolerance"]["why"]
    assert records["scan_hillis_steele"]["iterations"] == 6
    assert records["sequential"]["iterations"] == 63


def test_measure_is_deterministic(tmp_path, digits_npz, measured):
    _, records = measured
    job = make_job(tmp_path, digits_npz, {
        "metrics": [str(tmp_path / r / "metrics.json") for r in RUNS],
        "traces": [str(tmp_path / r / "trace.npz") for r in RUNS]})
    again = rnn.measure_job(job)
    for run in RUNS:
        for key in ("iterations", "max_abs_diff", "bitwise_equal", "network_evaluations"):
            assert again[run][key] == records[run][key], (run, key)


def test_training_curves_start_alike_and_record_parallel_steps(trained):
    first = {}
    for run in RUNS:
        with np.load(trained / run / "training.npz") as curves:
            assert curves["loss"].shape == curves["iterations"].shape == (2, 4)
            assert np.all(np.diff(curves["time_s"], axis=1) > 0)
            assert np.all((1 <= curves["iterations"]) & (curves["iterations"] <= 64))
            assert int(curves["steps"]) == 4 and int(curves["sequence_length"]) == 64
            first[run] = curves["loss"][:, 0]
    for run, loss in first.items():  # same weights and first batch for every run
        np.testing.assert_array_equal(loss, first["sequential"], err_msg=run)
    assert first["sequential"][0] != first["sequential"][1]  # repeats differ from each other


def test_convergence_traces(trained):
    with np.load(trained / "convergence.npz") as traces:
        assert int(traces["sequence_length"]) == 64
        for phase in ("begin", "end"):
            gs, jac = traces[f"{phase}_sequential"], traces[f"{phase}_jacobi"]
            scan = traces[f"{phase}_scan_hillis_steele"]
            assert gs.shape == (65, 3) and jac.shape[0] <= 65 and scan.shape == (7, 3)
            assert np.all(gs[-1] < 1e-10) and np.all(jac[-1] < 1e-10) and np.all(scan[-1] < 1e-10)
            assert np.all(gs[0] > 1e-6)  # zero adjoints are far from the gradient


def test_a_diverging_run_fails_with_advice(tmp_path, digits_npz):
    section = {**SECTION, "methods": ["sequential"], "lr": 1e6, "init_std": 3.0, "steps": 20, "repeats": 1}
    job = make_job(tmp_path, digits_npz, {"training": [str(tmp_path / "t.npz")],
                                          "weights": str(tmp_path / "w.npz"),
                                          "convergence": str(tmp_path / "c.npz")}, section)
    job.params.runs = ["sequential"]
    with pytest.raises(FloatingPointError, match="lower rnn_backprop.lr"):
        rnn.train_job(job)


def test_figures_and_table(tmp_path, measured, trained):
    out, _ = measured
    runs = rnn_plots.load_runs([str(out / r / "metrics.json") for r in RUNS],
                               [str(trained / r / "training.npz") for r in RUNS])
    for against in ("time", "step"):
        save(rnn_plots.loss_figure(runs, against=against), str(tmp_path / f"{against}.png"))
    save(rnn_plots.convergence_figure(str(trained / "convergence.npz")), str(tmp_path / "convergence.png"))
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in ("time", "step", "convergence"))
    labels = {r["run"]: rnn_plots.run_label(r) for r in runs}
    assert labels["jacobi_k2"].endswith("[approx.]") and not labels["jacobi"].endswith("[approx.]")
    assert not labels["scan_odd_even"].endswith("[approx.]")
    table = rnn_plots.markdown_table(runs)
    assert "jacobi (≤ 2 steps)" in table and "| jacobi_k2 |" in table
    assert table.count("\n") >= 2 * len(runs) + 3
