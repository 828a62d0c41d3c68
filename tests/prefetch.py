"""The slow tests' subprocess work, started when the session starts and run in the background at
low CPU priority, so that it uses the core the rest of the suite leaves idle.

Most tests run in this process on one core. A few slow ones wait on subprocesses (the end-to-end
DAG run twice, the experiments' contract instances measured at 1 and 2 threads, the GPU
benchmark's smoke mode) and only read what those leave behind. Such work is a *job*: a function
registered here under a name (:func:`job`); a test asks for it through a fixture of the same name
that returns :func:`result`. At the first test, conftest.py starts every job that a selected test
asks for, in the order the tests need them, two at a time in background threads, their
subprocesses under ``nice -n 10``; it also moves the tests that ask for a job to the end of the
run, so that the jobs have the whole session to finish beside the rest. Nothing is weakened: the
tests check what they checked, on the same outputs; only the time at which the work runs
changes. A job no selected test asks for never runs.

A test that needs a job the background has not begun runs it itself, at normal priority; one that
needs a job in progress waits for it. A job's exception (a failure, an error, a skip) is raised in
every test that asks for it. What a job's subprocesses leave running when the session ends is
killed (each runs in its own process group).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

# A niced process gets about a tenth of a core that a foreground one wants (CFS weights 110 against
# 1024): the foreground barely notices it, and it is never starved for long (what it times, and
# its time limits, only stretch).
NICE = 10
# Jobs at a time: two, so that the two cores are both used once the foreground only waits (a job
# such as the GPU smoke run keeps about one core busy).
WORKERS = 2
_JOBS: dict[str, Callable] = {}
_BACKGROUND: dict[str, Callable[[], bool]] = {}
_FUTURES: dict[str, Future] = {}
_LOCK = threading.Lock()
_LIVE: set[subprocess.Popen] = set()
_STATE: dict[str, Any] = {"tmp_path_factory": None, "items": {}, "stop": False}
_WORKER = threading.local()  # .nice set in the background threads
# (name, where it ran, seconds from the session's start to its start and to its end, outcome)
TIMES: list[tuple[str, str, float, float, str]] = []


@dataclass
class Context:
    """What a job is given: pytest's tmp_path_factory, the niceness its subprocesses run at
    (:func:`run` takes it), and the selected tests that ask for it (their parameters may say what
    to do)."""
    tmp_path_factory: Any
    nice: int
    items: list = field(default_factory=list)


def job(name: str, background: Callable[[], bool] = lambda: True):
    """Register ``fn(context)`` (a :class:`Context`) as the job ``name``. ``background()`` False
    (asked when the session starts): the job is left to the first test that needs it (work that
    cannot be niced)."""
    def register(fn):
        _JOBS[name] = fn
        _BACKGROUND[name] = background
        return fn
    return register


def registered() -> list[str]:
    return list(_JOBS)


def in_background(name: str) -> bool:
    """Whether the job ``name`` runs in the background (else in the first test that needs it)."""
    return _BACKGROUND[name]()


def run(cmd: list[str], *, nice: int = 0, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, ...)`` in its own process group,
    under ``nice -n <nice>`` when ``nice`` > 0, killed (group and all) on timeout or when the
    session ends first."""
    if nice > 0 and shutil.which("nice"):
        cmd = ["nice", "-n", str(nice), *cmd]
    # A process group of its own (to kill it whole), but not a session of its own: where the kernel
    # shares CPU time out by session (autogroup), a new session would be weighed against the tests
    # as an equal, whatever its niceness (Python 3.10 has only the session).
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **group, **kwargs)
    with _LOCK:
        _LIVE.add(proc)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        _kill(proc)
        proc.communicate()
        raise
    finally:
        with _LOCK:
            _LIVE.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _claim(name: str) -> tuple[Future, bool]:
    with _LOCK:
        future = _FUTURES.get(name)
        if future is not None:
            return future, False
        future = _FUTURES[name] = Future()
        return future, True


def _execute(name: str, future: Future, nice: int) -> None:
    begun, outcome = time.perf_counter(), "ok"
    try:
        context = Context(_STATE["tmp_path_factory"], nice, _STATE["items"].get(name, []))
        future.set_result(_JOBS[name](context))
    except BaseException as err:  # pytest's skip and fail are BaseExceptions: the test raises them
        outcome = type(err).__name__
        future.set_exception(err)
    finally:
        t0 = _STATE.get("t0", begun)
        TIMES.append((name, f"background, nice {nice}" if nice else "in a test", begun - t0,
                      time.perf_counter() - t0, outcome))


def result(name: str):
    """The job's result: waited for if it is running, run here if not begun (at normal priority
    in a test; niced in a background job that needs another's result)."""
    future, mine = _claim(name)
    if mine:
        _execute(name, future, nice=getattr(_WORKER, "nice", 0))
    return future.result()


def start(wanted: dict[str, list], tmp_path_factory) -> None:
    """Run the jobs ``wanted`` ({name: the tests that ask for it}; those of them meant for the
    background) in this order, :data:`WORKERS` at a time, niced."""
    # pytest makes its base temporary folder on first use, and two job threads asking at once can
    # each make one (mktemp then refuses "children_1 is not a normalized and relative path"):
    # make it here, before any thread starts.
    tmp_path_factory.getbasetemp()
    _STATE["tmp_path_factory"] = tmp_path_factory
    _STATE["items"] = dict(wanted)
    _STATE["t0"] = time.perf_counter()
    queue = [name for name in wanted if _BACKGROUND[name]()]

    def work():
        _WORKER.nice = NICE
        while not _STATE["stop"]:
            with _LOCK:
                if not queue:
                    return
                name = queue.pop(0)
            future, mine = _claim(name)
            if mine:
                _execute(name, future, nice=NICE)

    for i in range(min(WORKERS, len(queue))):
        threading.Thread(target=work, name=f"prefetch-{i}", daemon=True).start()


def stop() -> None:
    """Start nothing more, and kill what is still running (the session is over)."""
    _STATE["stop"] = True
    with _LOCK:
        live = list(_LIVE)
    for proc in live:
        _kill(proc)


atexit.register(stop)
