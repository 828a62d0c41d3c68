"""The RNN backprop experiment as jobs: settings, run names, data, a tiny training and its figures.

Uses scikit-learn's 8×8 digits (T = 64), hidden 6, a few SGD steps.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate

from ffsolve.data import Dataset, save_prepared
from ffsolve.data.digits import load_digits_dataset
from ffsolve.experiments import rnn_backprop, rnn_backprop_plots
from ffsolve.experiments.rnn_backprop_runs import parse_run, run_names
from ffsolve.jobs import Job
from ffsolve.plots import save
from ffsolve.results import REQUIRED_FIELDS

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "rnn_backprop.schema.yaml"

SETTINGS = {
    "activate": True,
    "dataset": "mnist",
    "image_size": None,  # digits stay 8×8: T = 64
    "hidden_size": 6,
    "init_std": 0.3,
    "lr": 1e-2,
    "steps": 4,
    "repeats": 2,
    "batch_size": 2,
    "ema_decay": 0.95,
    "methods": ["sequential", "jacobi", "scan"],
    "jacobi_budgets": [2, 100],
    "jacobi_tol": 1e-7,
    "scan_algorithms": ["hillis_steele", "odd_even"],
    "convergence_points": 3,
    "dtype": "float32",
    "exact_rtol": 1e-6,
}


def make_config(**overrides) -> dict:
    return {"seed": 7, "device": "cpu", "timing": {"repeats": 1, "warmup": 1},
            "rnn_backprop": {**SETTINGS, **overrides}}


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    save_prepared(load_digits_dataset(), path)
    return path


def train_job(out: Path, data: Path, run: str, config: dict) -> Job:
    ns = types.SimpleNamespace
    folder = out / run
    return Job(
        input=ns(dataset=str(data)),
        output=ns(metrics=str(folder / "metrics.json"), training=str(folder / "training.npz"),
                  weights=str(folder / "weights.npz")),
        params=ns(), config=config, threads=1, wildcards=ns(dataset="digits", run=run),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_npz) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("results")
    config = make_config()
    records = {run: rnn_backprop.train(train_job(out, digits_npz, run, config))
               for run in run_names(config["rnn_backprop"])}
    return out, records


def test_run_names_follow_the_config():
    assert run_names(SETTINGS) == [
        "sequential", "jacobi_k2", "jacobi_k100", "jacobi_tol", "scan_hillis_steele",
        "scan_odd_even",
    ]
    assert run_names({**SETTINGS, "jacobi_tol": None, "methods": ["jacobi"]}) == [
        "jacobi_k2", "jacobi_k100"]
    assert parse_run("jacobi_k30", SETTINGS)["max_iters"] == 30
    assert parse_run("jacobi_tol", SETTINGS)["tol"] == 1e-7


@pytest.mark.parametrize("name", ["jacobi", "jacobi_k0", "scan", "scan_blelloch", "bptt"])
def test_unknown_runs_are_refused(name):
    with pytest.raises(ValueError, match="unknown rnn_backprop run"):
        parse_run(name, SETTINGS)


def test_jacobi_tol_run_needs_a_tolerance():
    with pytest.raises(ValueError, match="rnn_backprop.jacobi_tol"):
        parse_run("jacobi_tol", {**SETTINGS, "jacobi_tol": None})


@pytest.mark.parametrize("key, value", [
    ("hidden_size", 0), ("steps", 1.5), ("lr", -1.0), ("dtype", "float16"),
    ("jacobi_budgets", [0]), ("image_size", 1), ("ema_decay", 1.0), ("jacobi_tol", -1e-3),
])
def test_bad_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"rnn_backprop.{key}"):
        rnn_backprop.check_settings({**SETTINGS, key: value})


def test_schema_refuses_unknown_and_mistyped_keys():
    schema = str(SCHEMA)
    validate(dict(SETTINGS), schema=schema)  # the test settings are a valid section
    with pytest.raises(Exception, match="hiden_size"):
        validate({**SETTINGS, "hiden_size": 8}, schema=schema)
    with pytest.raises(Exception, match="scan_algorithms"):
        validate({**SETTINGS, "scan_algorithms": ["blelloch"]}, schema=schema)


def test_both_configs_have_a_valid_section():
    for name in ("config.yaml", "paper.yaml"):
        section = yaml.safe_load((REPO / "config" / name).read_text())["rnn_backprop"]
        validate(section, schema=str(SCHEMA))
        rnn_backprop.check_settings(section)


def test_mnist_is_resized_to_t_100():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 255
    dataset = Dataset("mnist", images, np.zeros(2, np.int64), images[:1], np.zeros(1, np.int64),
                      "test")
    rows = rnn_backprop.dataset_sequences(dataset, "train", 10)
    assert rows.shape == (2, 100)
    assert 0.0 <= float(rows.min()) and float(rows.max()) <= 1.0
    square = rows[0].reshape(10, 10)
    assert float(square[4:6, 4:6].min()) > 0.9 and float(square[0, 0]) == 0.0


def test_batch_indices_cover_every_item_once_per_epoch():
    order = rnn_backprop.batch_indices(10, steps=7, batch=3, generator=torch.Generator().manual_seed(0))
    assert order.shape == (7, 3)
    first_epoch = order.reshape(-1)[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))


def test_training_writes_the_results_contract(trained):
    out, records = trained
    for run, record in records.items():
        assert all(key in record for key in REQUIRED_FIELDS)
        assert record["sequence_length"] == 64 and record["iterations"] <= 64
        assert json.loads((out / run / "metrics.json").read_text())["run"] == run
        with np.load(out / run / "training.npz") as curves:
            assert curves["loss"].shape == curves["backward_s"].shape == (2, 4)
            assert np.all(curves["backward_s"] > 0)
            assert np.all(np.diff(curves["time_s"], axis=1) > 0)
            assert np.all(curves["iterations"] <= 64)
    # Exact methods are exact; a budget of 2 (< T) is honestly not; a budget above T is clipped.
    for run in ("sequential", "jacobi_k100", "scan_hillis_steele", "scan_odd_even"):
        assert records[run]["exact_match"], run
        assert records[run]["max_abs_diff_vs_sequential"] < 1e-5
    assert not records["jacobi_k2"]["exact_match"]
    assert records["jacobi_k2"]["iterations"] == 2
    assert records["jacobi_k100"]["iterations_train_max"] <= 64


def test_every_run_starts_from_the_same_weights_and_data(trained):
    out, records = trained
    first = {}
    for run in records:
        with np.load(out / run / "training.npz") as curves:
            first[run] = curves["loss"][:, 0]
    for run, loss in first.items():
        np.testing.assert_array_equal(loss, first["sequential"], err_msg=run)
    assert first["sequential"][0] != first["sequential"][1]  # repeats differ from each other


def test_training_is_deterministic(tmp_path, digits_npz, trained):
    out, _ = trained
    rnn_backprop.train(train_job(tmp_path, digits_npz, "scan_odd_even", make_config()))
    with np.load(tmp_path / "scan_odd_even" / "training.npz") as again, \
            np.load(out / "scan_odd_even" / "training.npz") as before:
        np.testing.assert_array_equal(again["loss"], before["loss"])


def test_a_diverging_run_fails_with_advice(tmp_path, digits_npz):
    config = make_config(lr=1e6, init_std=3.0, steps=20, repeats=1)
    with pytest.raises(FloatingPointError, match="lower rnn_backprop.lr"):
        rnn_backprop.train(train_job(tmp_path, digits_npz, "sequential", config))


def test_convergence_traces_and_figures(tmp_path, digits_npz, trained):
    out, records = trained
    ns = types.SimpleNamespace
    job = Job(
        input=ns(dataset=str(digits_npz), weights=str(out / "sequential" / "weights.npz")),
        output=ns(convergence=str(tmp_path / "convergence.npz")),
        params=ns(), config=make_config(), threads=1, wildcards=ns(dataset="digits"),
    )
    rnn_backprop.convergence(job)
    with np.load(tmp_path / "convergence.npz") as traces:
        for phase in ("begin", "end"):
            gs, jac = traces[f"{phase}_sequential"], traces[f"{phase}_jacobi"]
            scan = traces[f"{phase}_scan_hillis_steele"]
            assert gs.shape == (65, 3) and jac.shape[0] <= 65 and scan.shape == (7, 3)
            assert np.all(gs[-1] < 1e-10) and np.all(jac[-1] < 1e-10) and np.all(scan[-1] < 1e-10)
            assert np.all(gs[0] > 1e-6)  # zero adjoints are far from the gradient
    runs = rnn_backprop_plots.load_runs(
        [str(out / r / "metrics.json") for r in records],
        [str(out / r / "training.npz") for r in records])
    for against in ("time", "step"):
        save(rnn_backprop_plots.loss_figure(runs, against=against), str(tmp_path / f"{against}.png"))
    save(rnn_backprop_plots.convergence_figure(str(tmp_path / "convergence.npz")),
         str(tmp_path / "convergence.png"))
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in ("time", "step", "convergence"))
    table = rnn_backprop_plots.markdown_table(runs)
    assert table.count("\n") == len(runs) + 1 and "jacobi_k2" in table
