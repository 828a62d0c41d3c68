"""The MADE rules end to end on a throw-away copy: embedded MNIST, a tiny MADE, every method."""

import json

import numpy as np
import pytest
import torch

from ffsolve.models.made import MADE, save_checkpoint
from workflow_helpers import copy_workflow, only, snakemake, write_config

TINY = {
    "hidden_sizes": [8],
    "train": {"steps": 3, "batch_size": 8, "eval_every": 3},
    "sample": {"batch": 3, "block_sizes": [392], "snapshot_count": 2, "show": 2},
}
RUNS = ["sequential", "jacobi", "gs_jacobi_b392"]


@pytest.mark.slow
def test_made_rules_train_sample_and_draw(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = write_config(workdir, {**only({"made": TINY}), "timing": {"repeats": 1, "warmup": 0}})
    snakemake(workdir, "--configfile", str(config), "--", "figures")
    loaded = torch.load(workdir / "results/made/mnist/model.pt", weights_only=True)
    assert loaded["hidden_sizes"] == [8]
    for run in RUNS:
        metrics = json.loads((workdir / f"results/made/mnist/{run}/metrics.json").read_text())
        assert metrics["exact_match"] is True, run
        assert 1 <= metrics["iterations"] <= metrics["sequence_length"] == 784
        with np.load(workdir / f"results/made/mnist/{run}/trace.npz") as trace:
            assert trace["error_mean"][-1] == 0
    for name in ("made_mnist", "made_mnist_samples"):
        for ext in ("png", "pdf"):
            assert (workdir / f"figures/{name}.{ext}").stat().st_size > 5_000
    executed = json.loads((workdir / "results/notebooks/made_mnist.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "| jacobi |" in text and "bits/dim" in text
    assert "train" in (workdir / "logs/made/mnist/train.log").read_text()


def test_named_checkpoint_replaces_training(tmp_path):
    workdir = copy_workflow(tmp_path)
    checkpoint = tmp_path / "mine.pt"
    save_checkpoint(MADE(784, [8]), checkpoint, {"logit_lambda": 1e-6})
    config = write_config(
        workdir, only({"made": {**TINY, "checkpoint": {"mnist": str(checkpoint)}}})
    )
    proc = snakemake(workdir, "-n", "--configfile", str(config), "--", "figures")
    assert "made_sample" in proc.stdout and "made_train" not in proc.stdout
    assert "data_prepare" not in proc.stdout  # sampling a given model needs no data


def test_unknown_made_setting_is_refused_naming_it(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = write_config(workdir, only({"made": {"sample": {"batchsize": 4}}}))
    proc = snakemake(workdir, "-n", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'made' is invalid" in out and "'batchsize' was unexpected" in out
