"""The end-to-end DAG (tests/workflow/e2e/config.yaml) through workflow/profiles/slurm on a real Slurm
cluster: every rule runs as a Slurm job, and a second run does nothing. That Slurm run is the
session's second run of the DAG (the ``e2e_second`` job of tests/e2e_runs.py): the two-runs
comparison of tests/workflow/test_end_to_end.py checks its results against the local run bit for bit.

Runs where FFSOLVE_SLURM=1 says a cluster is up (.ci/run starts one with
tests/workflow/cluster/local_slurm.sh and sets it); skips elsewhere, saying so. By hand:

    sudo tests/workflow/cluster/local_slurm.sh start
    FFSOLVE_SLURM=1 .venv/bin/python -m pytest tests/workflow/cluster tests/workflow/test_end_to_end.py
    sudo tests/workflow/cluster/local_slurm.sh stop
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from e2e_runs import NO_SLURM, slurm_wanted
from workflow_helpers import snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(not slurm_wanted(), reason=NO_SLURM)]

# Target rules: they only collect files and run inside the submitting Snakemake.
TARGET_RULES = {"all", "figures"}
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.?$", re.M)


def test_every_rule_ran_as_a_slurm_job(e2e_second, record_testsuite_property):
    cluster, output = e2e_second.workdir, e2e_second.output
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


def test_second_slurm_run_does_nothing(e2e_second):
    proc = snakemake(e2e_second.workdir, "-n", *e2e_second.args, "--configfile", str(e2e_second.config),
                     "--", "figures")
    assert "Nothing to be done" in proc.stdout + proc.stderr
