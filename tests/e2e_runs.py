"""The end-to-end DAG (tests/workflow/e2e/config.yaml), run once per test session, and the second run that
the two-runs comparison needs: jobs of tests/prefetch.py, shared by tests/workflow/test_end_to_end.py and
tests/workflow/cluster/.

* ``e2e_first``: the whole DAG (target ``figures``) from scratch, on this machine. Every check of
  the workflow's own behaviour reads it (tests/workflow/test_end_to_end.py), and it is the local run the
  Slurm run is compared with.
* ``e2e_second``: a second run from scratch, in another folder. Where a Slurm cluster is up
  (``FFSOLVE_SLURM=1``, as in CI) it is the whole DAG through workflow/profiles/slurm, every rule a
  Slurm job (tests/workflow/cluster/ checks that); elsewhere it is a local run of the jobs that make what
  the comparison reads (every ``results/**/metrics.json`` and ``results/**/*.npz`` of the first
  run: data, training, every measure job), without the figures, notebooks and tables that read
  them. Either way tests/workflow/test_end_to_end.py compares its iterations, flags and arrays with the
  first run's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import prefetch
from workflow_helpers import REPO, copy_workflow, snakemake

E2E_CONFIG = REPO / "tests" / "workflow" / "e2e" / "config.yaml"
# A background run may wait on the foreground tests for the cores: generous limits.
TIMEOUT_S = 3600
# Test-only speed-up: the Slurm executor's first status check 5 s after a job finishes instead of
# 40 s (MinJobAge=300 of local_slurm.sh stays above the 3 x 5 s that squeue status checks need).
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "5")


@dataclass
class Run:
    workdir: Path
    config: Path
    output: str
    # the arguments that select the executor (empty: local), for reruns of the same kind
    args: list[str] = field(default_factory=list)
    # what the two-runs comparison reads, listed when the run ended (compared_files)
    compared: list[str] = field(default_factory=list)


def prepare(workdir: Path) -> Path:
    copy_workflow(workdir)
    config = workdir / "config" / "e2e.yaml"
    shutil.copy(E2E_CONFIG, config)
    return config


def compared_files(workdir: Path) -> list[str]:
    """What the two-runs comparison reads: every metrics.json and .npz under results/."""
    return sorted(str(p.relative_to(workdir)) for pattern in ("results/**/metrics.json", "results/**/*.npz")
                  for p in workdir.glob(pattern))


@prefetch.job("e2e_first")
def first_run(context: prefetch.Context) -> Run:
    workdir = context.tmp_path_factory.mktemp("e2e_first")
    config = prepare(workdir)
    proc = snakemake(workdir, "--configfile", str(config), "--", "figures", nice=context.nice,
                     timeout=TIMEOUT_S)
    return Run(workdir, config, proc.stdout + proc.stderr, compared=compared_files(workdir))


def slurm_wanted() -> bool:
    return os.environ.get("FFSOLVE_SLURM") == "1"


# The Slurm run's jobs run under slurmd at its priority, not niced: it is left to the first test
# that needs it (at the end of the session), not run beside the timing-sensitive tests.
@prefetch.job("e2e_second", background=lambda: not slurm_wanted())
def second_run(context: prefetch.Context) -> Run:
    if slurm_wanted():
        return slurm_run(context)
    targets = prefetch.result("e2e_first").compared
    workdir = context.tmp_path_factory.mktemp("e2e_second")
    config = prepare(workdir)
    proc = snakemake(workdir, "--configfile", str(config), "--", *targets, nice=context.nice,
                     timeout=TIMEOUT_S)
    return Run(workdir, config, proc.stdout + proc.stderr, compared=compared_files(workdir))


# -- Slurm -----------------------------------------------------------------------------------------
NO_SLURM = ("no Slurm cluster: set FFSOLVE_SLURM=1 after `sudo tests/workflow/cluster/local_slurm.sh start` "
            "(.ci/run does both)")


def cluster_or_skip() -> tuple[str, int]:
    """The cluster's default partition (marked * by sinfo) and the memory per job (MB) that lets
    every CPU of its node run a job (at most 4000), or a skip/failure saying why."""
    if not slurm_wanted():
        pytest.skip(NO_SLURM)
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[cluster]'")
    if shutil.which("sinfo") is None:
        pytest.fail("FFSOLVE_SLURM=1 but there is no sinfo: run "
                    "`sudo tests/workflow/cluster/local_slurm.sh start`")
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %T %c %m"], capture_output=True, text=True,
                          timeout=30)
    lines = [line.split() for line in proc.stdout.splitlines() if len(line.split()) == 5]
    usable = [(partition, int(cpus), int(mem.rstrip("+"))) for partition, avail, state, cpus, mem in lines
              if avail == "up" and state in ("idle", "mixed", "allocated")]
    if proc.returncode != 0 or not usable:
        pytest.fail(f"FFSOLVE_SLURM=1 but no partition is up with a usable node (sinfo: "
                    f"{proc.stdout.strip() or proc.stderr.strip()}); "
                    "`sudo tests/workflow/cluster/local_slurm.sh start`")
    partition, cpus, mem_mb = ([u for u in usable if u[0].endswith("*")] or usable)[0]
    return partition.rstrip("*"), max(500, min(4000, mem_mb // max(cpus, 1)))


def slurm_args(partition: str, mem_mb: int) -> list[str]:
    """The README's cluster command for a cluster without accounting (sacct answers nothing)."""
    return ["--workflow-profile", "workflow/profiles/slurm", "--slurm-status-command", "squeue",
            *FAST_STATUS, "--slurm-keep-successful-logs",
            "--default-resources", "slurm_account=local", f"slurm_partition={partition}",
            "runtime=60", f"mem_mb={mem_mb}"]


def slurm_run(context: prefetch.Context) -> Run:
    """The whole DAG through workflow/profiles/slurm: every rule a Slurm job."""
    args = slurm_args(*cluster_or_skip())
    workdir = context.tmp_path_factory.mktemp("e2e_slurm")
    config = prepare(workdir)
    proc = snakemake(workdir, *args, "--configfile", str(config), "--", "figures", nice=context.nice,
                     timeout=TIMEOUT_S)
    return Run(workdir, config, proc.stdout + proc.stderr, args=args, compared=compared_files(workdir))
