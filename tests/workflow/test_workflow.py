"""The workflow skeleton: lint, dry run, and the solver demo end to end on a throw-away copy."""

import csv
import json

import numpy as np
import pytest

from ffsolve.data import load_prepared
from workflow_helpers import copy_workflow, only, snakemake, write_config

DEMO = {"length": 24, "batch": 3, "block_sizes": [5], "methods": ["sequential", "jacobi", "gs_jacobi", "jacobi_gs"]}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The solver demo's whole DAG (runs, summary, papermill figure) on a tiny config."""
    workdir = copy_workflow(tmp_path_factory.mktemp("demo_wf"))
    config = write_config(workdir, {**only({"solver_demo": DEMO}), "timing": {"repeats": 2, "warmup": 0}})
    snakemake(workdir, "--configfile", str(config), "--", "figures")
    return workdir, config


def test_lint_is_clean(tmp_path):
    workdir = copy_workflow(tmp_path)
    proc = snakemake(workdir, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_of_figures_resolves(tmp_path):
    workdir = copy_workflow(tmp_path)
    proc = snakemake(workdir, "-n", "figures")
    assert "solver_demo_measure" in proc.stdout


def test_demo_produces_exact_metrics_summary_and_figure(demo_run):
    workdir, _ = demo_run
    runs = ["sequential", "jacobi", "gs_jacobi_b5", "jacobi_gs_b5"]
    for run in runs:
        metrics = json.loads((workdir / f"results/solver_demo/tanh_map/{run}/metrics.json").read_text())
        assert metrics["bitwise_equal"] is True and metrics["max_abs_diff"] == 0
        assert 1 <= metrics["iterations"] <= DEMO["length"]
        assert metrics["sequence_length"] == DEMO["length"]
        assert metrics["timing"]["repeats"] == 2
        with np.load(workdir / f"results/solver_demo/tanh_map/{run}/trace.npz") as trace:
            assert trace["error_mean"].shape == (metrics["iterations"] + 1,)
            assert trace["error_mean"][-1] == 0
    with open(workdir / "results/summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["method"] for row in rows) == sorted(["sequential", "jacobi", "gs_jacobi", "jacobi_gs"])
    for ext in ("png", "pdf"):
        assert (workdir / f"figures/solver_demo.{ext}").stat().st_size > 10_000
    executed = json.loads((workdir / "results/notebooks/solver_demo.ipynb").read_text())
    assert any("| jacobi |" in "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    # One timed process for every method: one session, every other run interleaved with each.
    sessions = {json.loads((workdir / f"results/solver_demo/tanh_map/{run}/metrics.json").read_text())
                ["timing"]["session"] for run in runs}
    assert len(sessions) == 1
    assert (workdir / "logs/solver_demo/tanh_map/measure.log").read_text().count("finished") == 1


def test_second_run_does_nothing(demo_run):
    workdir, config = demo_run
    proc = snakemake(workdir, "-n", "--configfile", str(config), "--", "figures")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_setting_reruns_only_what_reads_it(demo_run):
    workdir, config = demo_run
    proc = snakemake(
        workdir, "-n", "--configfile", str(config), "--config", "seed=99", "--", "figures"
    )
    out = proc.stdout
    assert "solver_demo_measure" in out and "summary" in out
    assert "data_prepare" not in out


def test_embedded_mnist_is_prepared_offline(tmp_path):
    workdir = copy_workflow(tmp_path)
    snakemake(workdir, "resources/data/mnist.npz")
    data = load_prepared(workdir / "resources/data/mnist.npz")
    assert data.train_images.shape == (9000, 28, 28) and data.test_images.shape == (1000, 28, 28)
    assert data.source == "embedded"


def test_slurm_profile_resolves_resources(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[cluster]'")
    workdir = copy_workflow(tmp_path)
    # On a cluster the submitting host may have no GPU: device cuda asks for one regardless.
    proc = snakemake(workdir, "-n", "--workflow-profile", "workflow/profiles/slurm",
                     "--config", "device=cuda", "--", "figures")
    out = proc.stdout
    assert "Using workflow specific profile workflow/profiles/slurm" in out + proc.stderr
    assert "runtime=60" in out and "mem_mb=16000" in out
    blocks = {block.split(":", 1)[0]: block for block in out.split("\nrule ")[1:]}
    for rule in ("made_train", "made_measure", "pixelcnnpp_measure", "densenet_measure"):
        assert "gpu=1" in blocks[rule], f"{rule} must ask the cluster for a GPU with device cuda"
    for rule in ("data_prepare", "summary", "speedups", "densenet_train"):
        assert "gpu=1" not in blocks[rule], f"{rule} uses no GPU and must not queue for one"


def test_jobs_on_a_machine_without_a_gpu_never_wait_for_one(tmp_path):
    # device auto on a machine without nvidia-smi: no rule asks for the gpu resource at all.
    workdir = copy_workflow(tmp_path)
    proc = snakemake(workdir, "-n", "--config", "device=auto", "--", "figures",
                     env={"PATH": "/usr/bin:/bin"})
    assert "gpu=1" not in proc.stdout


def test_report_opens_in_chromium_and_lists_every_figure(demo_run):
    pytest.importorskip("playwright", reason="pip install -e '.[test]'")
    from ffsolve.workflow.report_check import find_chromium, list_report_figures

    if not find_chromium():
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    workdir, config = demo_run
    snakemake(workdir, "--configfile", str(config), "--report", "report.html", "--", "figures")
    listed = list_report_figures(workdir / "report.html")
    assert listed.get("Solver demo") == ["figures/solver_demo.png"]
    assert sorted(listed.get("Overview", [])) == ["figures/frontier.png", "figures/speedups.png"]
