"""Shared test settings: quiet progress bars, one thread, the repository root; the slow tests'
subprocess work, run in the background (tests/prefetch.py)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("FFSOLVE_PROGRESS", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import children  # noqa: E402,F401  (registers the contract and thread children, tests/children.py)
import e2e_runs  # noqa: E402  (registers the end-to-end runs, tests/e2e_runs.py)
import prefetch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The full MNIST (torchvision layout) next to the checkout on the dev machines; elsewhere point
# FFSOLVE_MNIST_ROOT at a folder that contains MNIST/raw/.
SHARED_MNIST = Path(os.environ.get("FFSOLVE_MNIST_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_mnist_root() -> Path:
    """The full MNIST in ../shared/data (torchvision layout), or a skip saying why."""
    if not (SHARED_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"full MNIST not found at {SHARED_MNIST}/MNIST/raw (set FFSOLVE_MNIST_ROOT)")
    return SHARED_MNIST


# -- the slow tests' subprocess work, in the background (tests/prefetch.py) ------------------------

def _jobs_of(item) -> list[str]:
    """The background jobs a test asks for (none if a skip mark already decides it)."""
    if any(mark.name == "skip" or (mark.args and mark.args[0] is True)
           for mark in item.iter_markers() if mark.name in ("skip", "skipif")):
        return []
    return [name for name in prefetch.registered() if name in getattr(item, "fixturenames", ())]


# The order the jobs start in (two at a time), whatever folder their tests are in: the longest
# first, so that they end together. A job not named here starts after these, in test order.
JOB_ORDER = ("one_thread_children", "e2e_first", "e2e_second", "gpu_smoke", "two_thread_children")


def _job_rank(name: str) -> int:
    return JOB_ORDER.index(name) if name in JOB_ORDER else len(JOB_ORDER)


def _wait_rank(item) -> tuple[bool, int]:
    """Where a test that waits on jobs runs among those: first the tests that run a job themselves
    (one not run in the background: e2e_second on a Slurm cluster), then by the last of its jobs
    to start."""
    jobs = _jobs_of(item)
    return all(prefetch.in_background(name) for name in jobs), max(_job_rank(name) for name in jobs)


def pytest_collection_modifyitems(session, config, items):
    """Tests that wait on a background job run last (in the order their jobs start, then in their
    own order), so that the jobs have the rest of the session to finish."""
    waiting = sorted((i for i in items if _jobs_of(i)), key=_wait_rank)
    items[:] = [i for i in items if not _jobs_of(i)] + waiting


@pytest.fixture(scope="session", autouse=True)
def _background_jobs(request, tmp_path_factory):
    """Starts, in the order the tests need them, the jobs the selected tests ask for."""
    wanted: dict[str, list] = {}
    for item in request.session.items:
        for name in _jobs_of(item):
            wanted.setdefault(name, []).append(item)
    prefetch.start(dict(sorted(wanted.items(), key=lambda kv: _job_rank(kv[0]))), tmp_path_factory)
    yield
    prefetch.stop()


def pytest_terminal_summary(terminalreporter):
    """When each background job ran (seconds from the first test), beside --durations."""
    if prefetch.TIMES:
        terminalreporter.section("background jobs (tests/prefetch.py)")
        for name, where, begun, ended, outcome in sorted(prefetch.TIMES, key=lambda t: t[2]):
            terminalreporter.write_line(f"{name}: {begun:.0f} s to {ended:.0f} s ({ended - begun:.0f} s, "
                                        f"{where}): {outcome}")


@pytest.fixture(scope="session")
def e2e_first() -> e2e_runs.Run:
    """The end-to-end DAG on tests/workflow/e2e/config.yaml, run once per session (tests/e2e_runs.py)."""
    return prefetch.result("e2e_first")


@pytest.fixture(scope="session")
def e2e_second() -> e2e_runs.Run:
    """The second run from scratch: the Slurm run where FFSOLVE_SLURM=1, else a local run of what
    the two-runs comparison reads (tests/e2e_runs.py)."""
    return prefetch.result("e2e_second")


@pytest.fixture(scope="session")
def one_thread_children() -> dict:
    """{experiment: future of (report, arrays)}: the contract instance measured in a fresh process
    at 1 compute thread (tests/children.py)."""
    return prefetch.result("one_thread_children")


@pytest.fixture(scope="session")
def two_thread_children() -> dict:
    """The same at 2 compute threads (tests/children.py)."""
    return prefetch.result("two_thread_children")
