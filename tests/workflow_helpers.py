"""Running Snakemake on a throw-away copy of the workflow, so tests never touch results/."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import yaml

import prefetch
from ffsolve.experiments import EXPERIMENTS
from ffsolve.workflow.config import experiment_schema_path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "workflow", "config", "scripts", "src", "envs")


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def only(experiments: dict) -> dict:
    """A config that switches every experiment with a schema off, except those given (merged in)."""
    config = {}
    for name in EXPERIMENTS:
        if experiment_schema_path(name, REPO).exists():
            config[name] = {"activate": False}
    for name, settings in experiments.items():
        config[name] = {"activate": True, **settings}
    return config


def write_config(workdir: Path, config: dict, name: str = "test.yaml") -> Path:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return path


# The Slurm executor plugin (a test dependency) runs `scontrol show config` whenever Snakemake loads
# its plugins, on every call. Where a Slurm client is configured but no controller answers (a
# machine after `tests/workflow/cluster/local_slurm.sh stop`), that waits about 9 s each time. A session
# that uses no cluster (FFSOLVE_SLURM unset) points Slurm at an empty configuration, which scontrol
# refuses at once, as on a machine without Slurm; with FFSOLVE_SLURM=1 the cluster's stays.
NO_SLURM_CLIENT = {} if os.environ.get("FFSOLVE_SLURM") == "1" else {"SLURM_CONF": os.devnull}


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900, env=None, nice: int = 0):
    """Run the project's Snakemake with the test interpreter; returns the CompletedProcess.

    ``env`` entries replace those of this process's environment for the run; ``nice`` > 0 runs it
    at that niceness (a background job of tests/prefetch.py)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = prefetch.run(cmd, cwd=workdir, timeout=timeout, nice=nice,
                        env={**os.environ, "FFSOLVE_PROGRESS": "0", **NO_SLURM_CLIENT, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run's output: rule -> count."""
    jobs = {}
    for line in output.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match[1] != "total":
            jobs[match[1]] = int(match[2])
    return jobs


# Arrays that hold wall-clock measurements differ between runs; everything else must not.
TIMED = re.compile(r"time|seconds|_s$", re.I)


# Runs whose method is chosen by timing in each process (kit.auto): two runs of the workflow may
# choose differently. Their own checks (bitwise or within tolerance) hold either way; their
# iterations and arrays need not match another run's.
TIMED_CHOICE = {"auto"}


def chosen_by_timing(path: Path | str) -> bool:
    """Whether a results/<experiment>/<dataset>/<run>/... file belongs to a run in TIMED_CHOICE."""
    parts = Path(str(path).split(":")[0]).parts
    return len(parts) >= 5 and parts[-2].split("_t")[0] in TIMED_CHOICE


def comparable_arrays(workdir: Path) -> dict:
    """Every non-timing array of every results/**/*.npz (runs chosen by timing left out), keyed by
    file and name."""
    import numpy as np

    arrays = {}
    for path in sorted(workdir.glob("results/**/*.npz")):
        if chosen_by_timing(path.relative_to(workdir)):
            continue
        with np.load(path) as data:
            for key in data.files:
                if not TIMED.search(key):
                    arrays[f"{path.relative_to(workdir)}:{key}"] = data[key]
    return arrays
