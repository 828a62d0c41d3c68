"""The whole DAG on a tiny config (tests/e2e/config.yaml): every rule of every experiment runs,
notebooks included; reruns touch only what changed; two runs from scratch agree.
"""

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from ffsolve.kit.record import CUT_SHORT, validate_record
from ffsolve.kit.runs import is_sequential_baseline
from workflow_helpers import REPO, chosen_by_timing, comparable_arrays, copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow

E2E_CONFIG = REPO / "tests" / "e2e" / "config.yaml"
TARGET_RULES = {"all", "figures"}


def run_from_scratch(workdir):
    copy_workflow(workdir)
    config = workdir / "config" / "e2e.yaml"
    shutil.copy(E2E_CONFIG, config)
    proc = snakemake(workdir, "--configfile", str(config), "--", "figures")
    return workdir, config, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    return run_from_scratch(tmp_path_factory.mktemp("e2e_first"))


def dry_run(workdir, config, target="figures"):
    proc = snakemake(workdir, "-n", "--configfile", str(config), "--", target)
    return proc.stdout + proc.stderr


def test_every_rule_of_every_experiment_ran(first):
    workdir, _, output = first
    listed = snakemake(workdir, "--list-rules").stdout.split()
    ran = set(re.findall(r"^\s*(?:local)?rule (\w+):", output, re.M))
    missing = set(listed) - TARGET_RULES - ran
    assert not missing, f"rules that never ran in the end-to-end config: {sorted(missing)}"
    for experiment in ("solver_demo", "made", "rnn_backprop", "densenet", "pixelcnnpp", "rnn_forward"):
        assert list(workdir.glob(f"figures/{experiment}*.png")), f"no figure for {experiment}"


def test_every_run_meets_the_results_contract(first):
    workdir, _, _ = first
    metrics_files = sorted(workdir.glob("results/*/*/*/metrics.json"))
    experiments = {path.parts[-4] for path in metrics_files}
    assert experiments == {"solver_demo", "made", "rnn_backprop", "densenet", "pixelcnnpp", "rnn_forward"}
    for path in metrics_files:
        record = json.loads(path.read_text())
        where = str(path.relative_to(workdir))
        validate_record(record, where)  # one schema for every experiment
        if record["budget"] is None and record["tol"] == 0 and record.get("quantity", "solve") == "solve":
            # Run to the end at tol 0: equal to sequential bit for bit, or, for a path that cannot
            # be bitwise, within the tolerance it declares (with its reason).
            assert record["converged"], where
            if record["tolerance"] is None:
                assert record["bitwise_equal"], where
            else:
                assert record["within_tolerance"] and record["tolerance"]["why"], where
        check_own_accuracy_measure(record, where)
        # Every run of one experiment and dataset was timed in one process.
        siblings = {json.loads(p.read_text())["timing"]["session"] for p in path.parent.parent.glob("*/metrics.json")}
        assert len(siblings) == 1, f"{where}: runs of one dataset timed in {len(siblings)} processes"
    summary = (workdir / "results" / "summary.csv").read_text().splitlines()
    assert len(summary) == len(metrics_files) + 1
    table = (workdir / "figures" / "speedups.md").read_text()
    assert "| made | mnist | solve | jacobi |" in table and "| bitwise | within tol. |" in table
    # the table opens with one row per experiment: best run against the stronger baseline
    assert table.index("## At a glance") < table.index("## Every run")
    headline = table.split("## Every run")[0]
    assert "| made | mnist | solve | " in headline and "(vs sequential" in headline


def check_own_accuracy_measure(record, where):
    """What stopped the run, and the runs that are not one solve judged by their own measure."""
    stop, quantity = record["stopped_by"], record.get("quantity", "solve")
    assert (stop in CUT_SHORT) != record["converged"], where
    if not record["converged"]:
        assert record["within_tolerance"] is not True, where  # cut short: inexact
    if is_sequential_baseline(record["method"]):
        assert stop == "sequential", where
    if quantity == "time_to_top5":
        # judged by its top-5 lists against the forward pass's, never by a logit tolerance
        assert record["tolerance"] is None and record["within_tolerance"] is None, where
        assert 0 <= record["top5_match_fraction"] <= 1 and record["stop_iteration"] == record["iterations"], where
        assert stop in ("early_stop", "fixed_point", "exact_prefix"), where
    if quantity.startswith("train_"):
        # judged by the trained weights against BPTT's, and by the loss they reach
        assert {"final_ema_loss", "final_ema_loss_gap", "backward_stopped_by"} <= set(record), where
        if record["budget"] is None and record["tol"] == 0:  # trained to the end of every pass
            assert record["converged"], where
            if record["tolerance"] is None:
                assert record["bitwise_equal"] and record["final_ema_loss_gap"] == 0, where
            else:
                assert record["within_tolerance"], where
        elif record["budget"] is not None and not record["converged"]:
            assert stop == "budget" and not record["bitwise_equal"], where


def test_second_run_does_nothing(first):
    workdir, config, _ = first
    assert "Nothing to be done" in dry_run(workdir, config)


def test_removing_one_metrics_file_reruns_only_what_depends_on_it(first, tmp_path):
    workdir, config, _ = first
    removed = workdir / "results" / "made" / "mnist" / "jacobi" / "metrics.json"
    kept = removed.read_bytes()
    removed.unlink()
    try:
        # `all` names every result file; `figures` alone lets Snakemake skip a deleted
        # intermediate while the figures made from it are up to date.
        jobs = planned_jobs(dry_run(workdir, config, "all"))
    finally:
        removed.write_bytes(kept)
    assert jobs.get("made_measure") == 1
    assert set(jobs) <= {"made_measure", "made_figure", "summary", "speedups", "frontier",
                         "results_page", "all"}, jobs


def test_changed_parameter_reruns_the_affected_rules(first):
    workdir, config, _ = first
    changed = yaml.safe_load(config.read_text())
    changed["made"]["sample"]["batch"] = 2
    other = config.with_name("e2e_changed.yaml")
    other.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(dry_run(workdir, other))
    assert jobs.get("made_measure") == 1 and "made_figure" in jobs
    untouched = {"made_train", "data_prepare", "densenet_train", "densenet_measure",
                 "pixelcnnpp_train", "pixelcnnpp_measure", "rnn_backprop_train",
                 "rnn_backprop_measure", "solver_demo_measure", "rnn_forward_train",
                 "rnn_forward_measure", "rnn_forward_measure_jax"}
    assert not untouched & set(jobs), jobs


def test_two_runs_from_scratch_give_identical_iterations_and_samples(first, tmp_path):
    workdir, _, _ = first
    again, _, _ = run_from_scratch(tmp_path / "e2e_second")
    # auto's choice is made by timing in each process (workflow_helpers.TIMED_CHOICE).
    for path in sorted(workdir.glob("results/*/*/*/metrics.json")):
        if chosen_by_timing(path.relative_to(workdir)):
            continue
        ours = json.loads(path.read_text())
        theirs = json.loads((again / path.relative_to(workdir)).read_text())
        for field in ("iterations", "network_evaluations", "converged", "bitwise_equal",
                      "within_tolerance", "max_abs_diff"):
            assert ours[field] == theirs[field], (path, field)

    first_arrays, second_arrays = (comparable_arrays(run) for run in (workdir, again))
    assert first_arrays.keys() == second_arrays.keys()
    for key, value in first_arrays.items():
        np.testing.assert_array_equal(value, second_arrays[key], err_msg=key)
