"""The RNN backprop rules end to end on a throw-away copy: embedded MNIST at 4×4 (T = 16)."""

import json

import numpy as np
import pytest

from workflow_helpers import copy_workflow, only, snakemake, write_config

TINY = {
    "image_size": 4,
    "hidden_size": 4,
    "steps": 3,
    "repeats": 1,
    "jacobi_budgets": [2],
    "jacobi_tol": 1.0e-6,
    "scan_algorithms": ["odd_even"],
    "convergence_points": 2,
}
RUNS = ["sequential", "jacobi_k2", "jacobi_tol", "scan_odd_even"]


@pytest.mark.slow
def test_rnn_backprop_rules_train_trace_and_draw(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = write_config(
        workdir, {**only({"rnn_backprop": TINY}), "timing": {"repeats": 1, "warmup": 0}})
    snakemake(workdir, "--configfile", str(config), "--", "figures")
    for run in RUNS:
        metrics = json.loads((workdir / f"results/rnn_backprop/mnist/{run}/metrics.json").read_text())
        assert metrics["sequence_length"] == 16 and 1 <= metrics["iterations"] <= 16
        assert metrics["exact_match"] is (run != "jacobi_k2"), run
    with np.load(workdir / "results/rnn_backprop/mnist/convergence.npz") as traces:
        assert traces["end_sequential"].shape == (17, 2)
    for name in ("rnn_backprop", "rnn_backprop_iter", "rnn_backprop_convergence"):
        for ext in ("png", "pdf"):
            assert (workdir / f"figures/{name}.{ext}").stat().st_size > 5_000
    executed = json.loads((workdir / "results/notebooks/rnn_backprop.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "| jacobi_k2 |" in text
    summary = (workdir / "results/summary.csv").read_text()
    assert sum(line.startswith("rnn_backprop,") for line in summary.splitlines()) == len(RUNS)


def test_dry_run_lists_one_training_job_per_run(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = write_config(workdir, only({"rnn_backprop": TINY}))
    proc = snakemake(workdir, "-n", "--configfile", str(config), "--", "figures")
    for run in RUNS:
        assert f"results/rnn_backprop/mnist/{run}/metrics.json" in proc.stdout
    assert "rnn_backprop_convergence" in proc.stdout and "rnn_backprop_figure" in proc.stdout


def test_unknown_rnn_backprop_setting_is_refused_naming_it(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = write_config(workdir, only({"rnn_backprop": {"hiden_size": 8}}))
    proc = snakemake(workdir, "-n", "--configfile", str(config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'rnn_backprop' is invalid" in out and "'hiden_size' was unexpected" in out
