"""The DenseNet jobs end to end on a tiny model: train, solve (metrics contract), figure, config."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from ffsolve.data import Dataset, save_prepared
from ffsolve.experiments import densenet, densenet_plots
from ffsolve.jobs import Job
from ffsolve.plots import load_runs, save

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "densenet.schema.yaml"
RUNS = ["sequential", "jacobi", "gs_jacobi_b2"]


def tiny_config(tmp_path) -> dict:
    return {
        "seed": 7,
        "device": "cpu",
        "timing": {"repeats": 2, "warmup": 1},
        "data": {"imagenet_val": {"folder": None}},
        "densenet": {
            "datasets": ["mnist"], "methods": ["sequential", "jacobi", "gs_jacobi"],
            "block_sizes": [2], "match_rtol": 1e-4, "match_atol": 1e-5,
            "mnist": {"growth_rate": 4, "block_config": [3, 3], "num_init_features": 6,
                      "bn_size": 2, "compression": 0.5, "stem_stride": 2, "epochs": 1,
                      "batch_size": 32, "learning_rate": 0.005, "eval_images": 12},
        },
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Train and solve once for the module (a few seconds on one thread)."""
    tmp_path = tmp_path_factory.mktemp("densenet")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(80, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=80)
    data_path = tmp_path / "mnist.npz"
    save_prepared(Dataset("mnist", images[:64], labels[:64], images[64:], labels[64:], "test"), data_path)
    config = tiny_config(tmp_path)
    out = tmp_path / "results"
    train_job = Job(
        input=SimpleNamespace(data=str(data_path)),
        output=SimpleNamespace(model=str(out / "model.pt"), summary=str(out / "training.json")),
        params=None, config=config, threads=1, wildcards=SimpleNamespace(),
    )
    summary = densenet.train(train_job)
    output = {
        "metrics": [str(out / "mnist" / run / "metrics.json") for run in RUNS],
        "trace": [str(out / "mnist" / run / "trace.npz") for run in RUNS],
    }
    solve_job = Job(
        input=SimpleNamespace(model=str(out / "model.pt"), data=str(data_path)),
        output=output, params=None, config=config, threads=1,
        wildcards=SimpleNamespace(dataset="mnist"),
    )
    records = densenet.solve(solve_job)
    return summary, records, output


@pytest.mark.slow  # shares a ~20 s train-and-solve fixture
def test_training_writes_a_checkpoint_and_accuracy(finished):
    summary, _, _ = finished
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert np.isfinite(summary["epoch_losses"]).all()
    assert summary["dense_layers"] == 6


@pytest.mark.slow  # shares a ~20 s train-and-solve fixture
def test_every_method_matches_the_forward_pass(finished):
    _, records, output = finished
    assert sorted(records) == sorted(RUNS)
    for run, path in zip(RUNS, output["metrics"]):
        record = json.loads(Path(path).read_text())
        assert record["exact_match"] is True, run
        assert record["max_abs_diff_vs_sequential"] <= record["exact_match_tolerance"]["allowed_abs_diff"]
        assert 1 <= record["iterations"] <= record["sequence_length"] == 6
        assert record["wall_time_s"] > 0 and record["speedup_vs_sequential"] > 0
        stable = record["stable_top5_iteration"]
        assert stable is None or 0 <= stable <= record["iterations"]
        assert record["speed_only"] is False


@pytest.mark.slow  # shares a ~20 s train-and-solve fixture
def test_traces_are_consistent(finished):
    _, records, output = finished
    for run, path in zip(RUNS, output["trace"]):
        with np.load(path) as trace:
            assert trace["logit_error"].shape == (7, 12)
            assert trace["top5_mismatch"].shape == (7, 12)
            # The last iterate is the forward pass (within float tolerance) and agrees on top-5.
            assert trace["logit_error"][-1].max() < 1e-3
            assert not trace["top5_mismatch"][-1].any()
            assert np.all(np.diff(trace["time_s"]) >= 0) and trace["time_s"][0] == 0


@pytest.mark.slow  # shares a ~20 s train-and-solve fixture
def test_figure_and_table(finished, tmp_path):
    _, _, output = finished
    runs = load_runs(output["metrics"], output["trace"])
    save(densenet_plots.figure(runs), str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 0
    text = densenet_plots.table(runs)
    assert text.count("\n|") == len(RUNS) + 1 and "1.00x" in text


def test_config_schema_refuses_unknown_and_bad_keys():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = yaml.safe_load(SCHEMA.read_text())
    validate({"datasets": ["mnist"]}, schema=str(SCHEMA))
    with pytest.raises(WorkflowError, match="block_size"):
        validate({"block_size": [3]}, schema=str(SCHEMA))
    with pytest.raises(WorkflowError, match="jacobi_gs"):
        validate({"methods": ["jacobi_gs"]}, schema=str(SCHEMA))
    with pytest.raises(WorkflowError, match="imagenet"):
        validate({"datasets": ["imagenet"]}, schema=str(SCHEMA))
    assert schema["additionalProperties"] is False


def test_shipped_configs_validate():
    from snakemake.utils import validate

    for name in ("config.yaml", "paper.yaml"):
        section = yaml.safe_load((ROOT / "config" / name).read_text())["densenet"]
        validate(section, schema=str(SCHEMA))


def test_speed_only_problem_is_densenet201_on_random_inputs_and_says_so():
    config = {"seed": 3, "densenet": {"random_speed_only": {"images": 2, "image_size": 32}},
              "data": {"imagenet_val": {"folder": None}}}
    job = Job(input=SimpleNamespace(), output=None, params=None, config=config, threads=1,
              wildcards=SimpleNamespace(dataset="random_speed_only"))
    model, batches, labels, description = densenet.load_problem(job, "random_speed_only")
    assert model.num_dense_layers == 98 and not model.training
    assert [tuple(b.shape) for b in batches] == [(2, 3, 32, 32)]
    assert labels is None and "SPEED ONLY" in description
    again = densenet.load_problem(job, "random_speed_only")
    assert all(a.equal(b) for a, b in zip(batches, again[1]))  # seeded


def test_imagenet_problem_without_folder_names_the_key(tmp_path):
    from ffsolve.data import DataError

    config = {"seed": 3, "densenet": {"imagenet_val": {
        "weights_file": None, "download": False, "images": 100, "image_size": None}},
        "data": {"imagenet_val": {"folder": None}}}
    job = Job(input=SimpleNamespace(), output=None, params=None, config=config, threads=1,
              wildcards=SimpleNamespace(dataset="imagenet_val"))
    with pytest.raises(DataError, match="densenet.imagenet_val.weights_file"):
        densenet.load_problem(job, "imagenet_val")
