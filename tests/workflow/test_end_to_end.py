"""The whole DAG on a tiny config (tests/workflow/e2e/config.yaml): every rule of every experiment runs,
notebooks included; reruns touch only what changed; two runs from scratch agree.

The DAG runs once per session (the ``e2e_first`` job of tests/e2e_runs.py, in the background while
the rest of the suite runs: tests/prefetch.py); the second run the comparison needs is the Slurm
run of tests/workflow/cluster/ where a cluster is up, else a local run of what the comparison reads.
"""

import json
import re

import numpy as np
import pytest
import yaml

from ffsolve.kit.record import CUT_SHORT, validate_record
from ffsolve.kit.runs import is_sequential_baseline
from workflow_helpers import chosen_by_timing, comparable_arrays, planned_jobs, snakemake

pytestmark = pytest.mark.slow

TARGET_RULES = {"all", "figures"}


@pytest.fixture(scope="module")
def first(e2e_first):
    return e2e_first.workdir, e2e_first.config, e2e_first.output


def dry_run(workdir, config, target="figures"):
    proc = snakemake(workdir, "-n", "--configfile", str(config), "--", target)
    return proc.stdout + proc.stderr


def test_every_rule_of_every_experiment_ran(first):
    workdir, _, output = first
    listed = snakemake(workdir, "--list-rules").stdout.split()
    ran = set(re.findall(r"^\s*(?:local)?rule (\w+):", output, re.M))
    missing = set(listed) - TARGET_RULES - ran
    assert not missing, f"rules that never ran in the end-to-end config: {sorted(missing)}"
    for experiment in ("solver_demo", "made", "rnn_backprop", "densenet", "pixelcnnpp", "rnn_forward",
                       "speculative"):
        assert list(workdir.glob(f"figures/{experiment}*.png")), f"no figure for {experiment}"


def test_every_run_meets_the_results_contract(first):
    workdir, _, _ = first
    metrics_files = sorted(workdir.glob("results/*/*/*/metrics.json"))
    experiments = {path.parts[-4] for path in metrics_files}
    assert experiments == {"solver_demo", "made", "rnn_backprop", "densenet", "pixelcnnpp", "rnn_forward",
                           "speculative"}
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
                 "rnn_forward_measure", "rnn_forward_measure_jax", "speculative_measure",
                 "speculative_measure_jax"}
    assert not untouched & set(jobs), jobs


# What two runs from scratch must agree on, per metrics.json: always present, and present in
# some records only (the bitwise/tolerance flags' older names, the distance to sequential).
COMPARED = ("iterations", "network_evaluations", "converged", "bitwise_equal", "within_tolerance",
            "max_abs_diff")
COMPARED_WHERE_PRESENT = ("exact_match", "max_abs_diff_vs_sequential")


def metrics(workdir):
    """Every results/**/metrics.json by path, runs chosen by timing left out (their method is
    chosen in each process: workflow_helpers.TIMED_CHOICE)."""
    return {str(path.relative_to(workdir)): json.loads(path.read_text())
            for path in sorted(workdir.glob("results/**/metrics.json"))
            if not chosen_by_timing(path.relative_to(workdir))}


def test_two_runs_from_scratch_give_identical_iterations_and_samples(e2e_first, e2e_second):
    """The first run against a second from scratch in another folder: the Slurm run where a cluster
    is up (every rule a Slurm job: the same results whatever runs the jobs), else a local run of
    every job that makes a metrics.json or .npz (data, training and measure jobs; not the figures
    and tables that only read them)."""
    ours, theirs = metrics(e2e_first.workdir), metrics(e2e_second.workdir)
    assert ours, "the first run wrote no metrics.json"
    assert ours.keys() == theirs.keys()
    for path, record in ours.items():
        for field in COMPARED:
            assert field in record and field in theirs[path], (path, field)
            assert record[field] == theirs[path][field], (path, field)
        for field in COMPARED_WHERE_PRESENT:
            if field in record or field in theirs[path]:
                assert record.get(field) == theirs[path].get(field), (path, field)

    first_arrays, second_arrays = (comparable_arrays(run.workdir) for run in (e2e_first, e2e_second))
    assert first_arrays, "the first run wrote no .npz"
    assert first_arrays.keys() == second_arrays.keys()
    for key, value in first_arrays.items():
        np.testing.assert_array_equal(value, second_arrays[key], err_msg=key)
