"""The end-to-end DAG (tests/e2e/config.yaml) through workflow/profiles/slurm on a real Slurm
cluster: every rule runs as a Slurm job, the results agree with a local run of the same config
bit for bit, and a second run does nothing.

Runs where FFSOLVE_SLURM=1 says a cluster is up (.ci/run starts one with
tests/cluster/local_slurm.sh and sets it); skips elsewhere, saying so. By hand:

    sudo tests/cluster/local_slurm.sh start
    FFSOLVE_SLURM=1 .venv/bin/python -m pytest tests/cluster -m slurm
    sudo tests/cluster/local_slurm.sh stop
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from workflow_helpers import REPO, chosen_by_timing, comparable_arrays, copy_workflow, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

E2E_CONFIG = REPO / "tests" / "e2e" / "config.yaml"
# Target rules: they only collect files and run inside the submitting Snakemake.
TARGET_RULES = {"all", "figures"}
# The per-run results compared between the local and the Slurm run, where a metrics.json has them:
# iteration counts and the bitwise/tolerance flags (named exact_match, later bitwise_equal).
COMPARED_METRICS = ("iterations", "network_evaluations", "exact_match", "bitwise_equal",
                    "within_tolerance", "max_abs_diff", "max_abs_diff_vs_sequential")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)
# Test-only speed-up: the executor's first status check 5 s after a job finishes instead of 40 s
# (MinJobAge=300 of local_slurm.sh stays above the 3 x 5 s that squeue status checks need).
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "5")


def cluster_or_skip() -> tuple[str, int]:
    """The cluster's default partition (marked * by sinfo) and the memory per job (MB) that lets
    every CPU of its node run a job (at most 4000), or a skip/failure saying why."""
    if os.environ.get("FFSOLVE_SLURM") != "1":
        pytest.skip("no Slurm cluster: set FFSOLVE_SLURM=1 after `sudo tests/cluster/local_slurm.sh "
                    "start` (.ci/run does both)")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[cluster]'")
    if shutil.which("sinfo") is None:
        pytest.fail("FFSOLVE_SLURM=1 but there is no sinfo: run `sudo tests/cluster/local_slurm.sh start`")
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %T %c %m"], capture_output=True, text=True,
                          timeout=30)
    lines = [line.split() for line in proc.stdout.splitlines() if len(line.split()) == 5]
    usable = [(partition, int(cpus), int(mem.rstrip("+"))) for partition, avail, state, cpus, mem in lines
              if avail == "up" and state in ("idle", "mixed", "allocated")]
    if proc.returncode != 0 or not usable:
        pytest.fail(f"FFSOLVE_SLURM=1 but no partition is up with a usable node (sinfo: "
                    f"{proc.stdout.strip() or proc.stderr.strip()}); `sudo tests/cluster/local_slurm.sh start`")
    partition, cpus, mem_mb = ([u for u in usable if u[0].endswith("*")] or usable)[0]
    return partition.rstrip("*"), max(500, min(4000, mem_mb // max(cpus, 1)))


def slurm_args(partition: str, mem_mb: int) -> list[str]:
    """The README's cluster command for a cluster without accounting (sacct answers nothing)."""
    return ["--workflow-profile", "workflow/profiles/slurm", "--slurm-status-command", "squeue",
            *FAST_STATUS, "--slurm-keep-successful-logs",
            "--default-resources", "slurm_account=local", f"slurm_partition={partition}",
            "runtime=60", f"mem_mb={mem_mb}"]


def prepare(workdir: Path) -> Path:
    copy_workflow(workdir)
    config = workdir / "config" / "e2e.yaml"
    shutil.copy(E2E_CONFIG, config)
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A local run and a Slurm run of the end-to-end config, side by side.

    The local run goes while the Slurm run waits on the scheduler, so the pair costs little more
    than the Slurm run alone.
    """
    partition, mem_mb = cluster_or_skip()
    local, cluster = tmp_path_factory.mktemp("e2e_local"), tmp_path_factory.mktemp("e2e_slurm")
    local_config, cluster_config = prepare(local), prepare(cluster)
    with ThreadPoolExecutor(max_workers=1) as pool:
        local_run = pool.submit(snakemake, local, "--configfile", str(local_config), "--", "figures")
        proc = snakemake(cluster, *slurm_args(partition, mem_mb), "--configfile", str(cluster_config),
                         "--", "figures", timeout=2400)
        local_run.result()
    return local, cluster, cluster_config, slurm_args(partition, mem_mb), proc.stdout + proc.stderr


def test_every_rule_ran_as_a_slurm_job(runs, record_testsuite_property):
    _, cluster, _, _, output = runs
    listed = set(snakemake(cluster, "--list-rules").stdout.split()) - TARGET_RULES
    assert listed, "snakemake --list-rules listed no rule"
    jobs: dict[str, list[str]] = {}
    for _, slurm_id, log in SUBMITTED.findall(output):
        rule = re.search(r"/rule_(\w+)/", log)
        assert rule, f"Slurm log path without the rule: {log}"
        jobs.setdefault(rule[1], []).append(slurm_id)
        # The job's own output, written by slurmd on the node (kept by --slurm-keep-successful-logs)
        log_path = Path(log)
        assert log_path.is_file(), f"no Slurm log for job {slurm_id} ({rule[1]}): {log}"
        assert rule[1] in log_path.read_text(), f"Slurm log {log} does not mention rule {rule[1]}"
    missing = listed - set(jobs)
    assert not missing, f"rules that did not run as Slurm jobs: {sorted(missing)}\n{output[-3000:]}"
    local_jobs = set(re.findall(r"^\s*localrule (\w+):", output, re.M)) - TARGET_RULES
    assert not local_jobs, f"rules run outside Slurm: {sorted(local_jobs)}"
    # In CI's .ci-junit.xml (a property of the test suite) and on screen with -s.
    record_testsuite_property("slurm_job_ids", json.dumps(jobs, sort_keys=True))
    print("Slurm job ids per rule:", json.dumps(jobs, sort_keys=True))


def metrics(workdir: Path) -> dict[str, dict]:
    return {str(path.relative_to(workdir)): json.loads(path.read_text())
            for path in sorted(workdir.glob("results/**/metrics.json"))
            if not chosen_by_timing(path.relative_to(workdir))}


def test_iterations_and_flags_match_a_local_run(runs):
    local, cluster, *_ = runs
    ours, theirs = metrics(local), metrics(cluster)
    assert ours, "the local run wrote no metrics.json"
    assert ours.keys() == theirs.keys()
    for path, record in ours.items():
        assert "iterations" in record, path
        for key in COMPARED_METRICS:
            if key in record or key in theirs[path]:
                assert record.get(key) == theirs[path].get(key), f"{path}: {key}"


def test_arrays_match_a_local_run(runs):
    local, cluster, *_ = runs
    ours, theirs = comparable_arrays(local), comparable_arrays(cluster)
    assert ours, "the local run wrote no .npz"
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        np.testing.assert_array_equal(value, theirs[key], err_msg=key)


def test_second_slurm_run_does_nothing(runs):
    _, cluster, config, cluster_args, _ = runs
    proc = snakemake(cluster, "-n", *cluster_args, "--configfile", str(config), "--", "figures")
    assert "Nothing to be done" in proc.stdout + proc.stderr
