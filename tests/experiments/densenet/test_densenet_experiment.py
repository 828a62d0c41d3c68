"""The DenseNet jobs' library side on tiny models: training learns, the harness records every run
with its tolerance and top-5 fields, the figure and table draw them, the configs validate.
(The workflow itself runs in tests/workflow/test_end_to_end.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ffsolve.data import DataError, Dataset, save_prepared
from ffsolve.experiments.densenet import plots as densenet_plots
from ffsolve.experiments.densenet import stats
from ffsolve.experiments.densenet.experiment import (
    ModelSettings,
    Problem,
    MeasureSettings,
    TrainSettings,
    Training,
    load_problem,
    measure,
    run_specs,
    train,
)
from ffsolve.experiments.densenet.model import DenseNet, load_checkpoint
from ffsolve.experiments.densenet.system import CONTRACT_MODEL, LayerSystem, randomised_batch_norm
from ffsolve.kit import read_metrics
from ffsolve.kit.harness import TimingSettings
from ffsolve.kit import load_runs, save

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "src" / "ffsolve" / "experiments" / "densenet" / "config.schema.yaml"
SMALL = ModelSettings(growth_rate=4, block_config=(2, 2), num_init_features=6, bn_size=2,
                      compression=0.5, stem_stride=2)
SETTINGS = MeasureSettings(methods=("sequential", "jacobi", "jacobi_top5", "gs_jacobi"), block_sizes=(2, 3),
                    images=6, image_size=None, weights_file=None, download=False, top5_patience=1,
                    model=SMALL, train=Training(epochs=2, batch=32, lr=0.01))
RUNS = ["sequential", "jacobi", "jacobi_top5", "gs_jacobi_b2", "gs_jacobi_b3"]
EXACT = [run for run in RUNS if run != "jacobi_top5"]


def bars(count: int, seed: int):
    """A learnable toy task: the label is the brightness level (of 10) of a noisy image."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count)
    noise = rng.integers(0, 16, size=(count, 28, 28))
    images = (labels[:, None, None] * 24 + noise).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("densenet_train")
    train_x, train_y = bars(640, 0)
    test_x, test_y = bars(200, 1)
    data = tmp / "bars.npz"
    save_prepared(Dataset("mnist", train_x, train_y, test_x, test_y, "test"), data)
    summary = train(TrainSettings(SMALL, SETTINGS.train), data=str(data), checkpoint=str(tmp / "model.pt"),
                    record=str(tmp / "training.json"), seed=3, threads=1)
    return tmp, summary


def test_training_learns_a_learnable_task(trained):
    tmp, summary = trained
    assert summary["test_accuracy"] >= 0.3, summary  # chance is 0.1; 2 short epochs reach ~0.45
    assert summary["epoch_losses"][-1] < summary["epoch_losses"][0]
    assert summary["dense_layers"] == 4
    model = load_checkpoint(str(tmp / "model.pt"))
    assert model.num_dense_layers == 4 and not model.training


def test_training_is_reproducible_from_the_seed(trained, tmp_path):
    tmp, summary = trained
    again = train(TrainSettings(SMALL, SETTINGS.train), data=str(tmp / "bars.npz"), checkpoint=str(tmp_path / "m.pt"),
                  record=str(tmp_path / "t.json"), seed=3, threads=1)
    assert again["epoch_losses"] == summary["epoch_losses"]


def tiny_problem() -> Problem:
    torch.manual_seed(0)
    model = randomised_batch_norm(DenseNet(**CONTRACT_MODEL), seed=1)
    batch = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    return Problem(model, [batch], np.arange(6) % 10, "tiny test DenseNet")


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("densenet_measure")
    problem = tiny_problem()
    metrics = {run: str(tmp / run / "metrics.json") for run in RUNS}
    traces = {run: str(tmp / run / "trace.npz") for run in RUNS}
    records = measure(SETTINGS, problem=problem, dataset="mnist", seed=5,
                      timing=TimingSettings(repeats=2, warmup=0), device=torch.device("cpu"),
                      metrics=metrics, traces=traces, threads=1)
    return records, metrics, traces


def test_every_run_is_recorded_with_its_exactness_rule(measured):
    records, metrics, _ = measured
    assert [r.name for r in run_specs(SETTINGS)] == RUNS
    assert sorted(records) == sorted(RUNS)
    for run, path in metrics.items():
        record = read_metrics(path)
        assert record["iterations"] <= record["sequence_length"] == 9, run
        assert record["tf32"] is False
        if run == "jacobi_top5":  # judged by its top-5 lists, never by the logit tolerance
            assert record["quantity"] == "time_to_top5"
            assert record["tolerance"] is None and record["within_tolerance"] is None
            assert 0 <= record["top5_match_fraction"] <= 1
            continue
        assert record["converged"] and "quantity" not in record
        assert record["stopped_by"] == ("sequential" if run == "sequential" else
                                        "exact_prefix" if record["iterations"] == 9 else "fixed_point"), run
        if run == "sequential":
            assert record["bitwise_equal"] and record["tolerance"] is None
            assert record["network_evaluations"] == 1.0
        else:
            assert record["within_tolerance"] is True, run
            assert record["max_abs_diff"] <= record["tolerance"]["atol"]
            assert "logits" in record["tolerance"]["why"]
    sessions = {read_metrics(p)["timing"].get("session") for p in metrics.values()}
    assert len(sessions) == 1  # one harness call


def test_trace_analysis_fields_follow_the_traces(measured):
    _, metrics, traces = measured
    for run in RUNS:
        record = read_metrics(metrics[run])
        assert "wall_time_top5_s" not in record and "top5_timing" not in record  # no oracle timing
        with np.load(traces[run]) as trace:
            mismatch5 = trace["top5_mismatch"]
            assert mismatch5.shape == (record["iterations"] + 1, 6)
            assert trace["logit_error"].shape == (record["iterations"] + 1, 6)
            assert trace["batch_iterations"].tolist() == [record["iterations"]]
            if run in EXACT:
                assert not mismatch5[-1].any()
                assert trace["logit_error"][-1].max() <= record["max_abs_diff"] * 10 + 1e-6
        stable = stats.as_optional(stats.batch_stable_iteration(mismatch5))
        assert record["stable_top5_iteration"] == stable


def test_top5_run_records_its_stop_and_agreement(measured):
    _, metrics, traces = measured
    record = read_metrics(metrics["jacobi_top5"])
    jacobi = read_metrics(metrics["jacobi"])
    assert record["quantity"] == "time_to_top5" and record["top5_patience"] == 1
    assert "never looking at the forward pass" in record["stop_rule"]
    # Where the rule must stop, worked out here from full Jacobi's iterates: the first step at
    # which no image's top-5 list changed (patience 1), unless the fixed point comes first.
    model = tiny_problem().model.eval()
    (batch,) = tiny_problem().batches
    with torch.no_grad():
        full, frames = LayerSystem(model).traced("jacobi", batch)
        forward = model(batch).numpy()
    lists = stats.topk(frames, 5)
    settled = [k for k in range(1, len(lists)) if np.array_equal(lists[k], lists[k - 1])]
    stop = min(settled[0], full.iterations) if settled else full.iterations
    assert record["iterations"] == record["stop_iteration"] == stop <= jacobi["iterations"]
    assert record["converged"] == (stop == full.iterations)
    assert record["stopped_by"] == ("early_stop" if stop < full.iterations else
                                    "exact_prefix" if stop == record["sequence_length"] else "fixed_point")
    assert record["top5_match_fraction"] == pytest.approx(
        np.mean(np.all(lists[stop] == stats.topk(forward, 5), axis=-1)))
    assert record["timing"]["session"] == jacobi["timing"]["session"]
    with np.load(traces["jacobi_top5"]) as trace:  # the last iterate is the timed output
        assert record["top5_match_fraction"] == pytest.approx(1 - trace["top5_mismatch"][-1].mean())
        assert record["top1_match_fraction"] == pytest.approx(1 - trace["top1_mismatch"][-1].mean())
    assert record["top5_set_match_fraction"] >= record["top5_match_fraction"]


def test_figure_and_table(measured, tmp_path):
    _, metrics, traces = measured
    runs = load_runs([metrics[r] for r in RUNS], [traces[r] for r in RUNS])
    save(densenet_plots.figure(runs), str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 0
    text = densenet_plots.table(runs)
    assert text.count("\n|") == len(RUNS) + 1 and "| sequential | forward pass | 9 (9) | 1 |" in text
    assert "| jacobi_top5 | time to top-5 unchanged for 1 steps |" in text
    assert "1.00x" in text and "within tol." in text and "trace analysis" in text


def test_shipped_configs_validate_and_unknown_keys_are_refused():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    for name in ("config.yaml", "paper.yaml"):
        validate(yaml.safe_load((ROOT / "config" / name).read_text())["densenet"], schema=str(SCHEMA))
    for bad, key in (({"match_rtol": 1e-4}, "match_rtol"), ({"methods": ["jacobi_gs"]}, "jacobi_gs"),
                     ({"datasets": ["imagenet"]}, "imagenet"), ({"model": {"growth": 4}}, "growth")):
        with pytest.raises(WorkflowError, match=key):
            validate(bad, schema=str(SCHEMA))


def test_settings_cover_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    layout = {"activate", "datasets", "per_dataset"}
    assert set(schema["properties"]) - layout == {f.name for f in dataclasses.fields(MeasureSettings)}
    assert set(schema["properties"]["model"]["properties"]) == {f.name for f in dataclasses.fields(ModelSettings)}
    assert set(schema["properties"]["train"]["properties"]) == {f.name for f in dataclasses.fields(Training)}


def test_speed_only_problem_is_densenet201_on_seeded_random_inputs():
    settings = dataclasses.replace(SETTINGS, images=2, image_size=32)
    problem = load_problem(settings, "random_speed_only", seed=3)
    assert problem.model.num_dense_layers == 98 and not problem.model.training
    assert [tuple(b.shape) for b in problem.batches] == [(2, 3, 32, 32)]
    assert problem.labels is None and problem.speed_only and "SPEED ONLY" in problem.description
    again = load_problem(settings, "random_speed_only", seed=3)
    assert torch.equal(problem.batches[0], again.batches[0])
    assert torch.equal(problem.model.classifier.weight, again.model.classifier.weight)
    with pytest.raises(ValueError, match="random_speed_only.image_size"):
        load_problem(SETTINGS, "random_speed_only", seed=3)


def test_imagenet_problem_without_weights_names_the_key(tmp_path):
    with pytest.raises(DataError, match="densenet.weights_file"):
        load_problem(SETTINGS, "imagenet_val", seed=3, image_folder=str(tmp_path))
