"""The library contract (DESIGN.md §3), checked on every experiment's systems.

Each experiment's ``system.py`` offers ``contract_candidates()``: a tiny instance of its triangular
map with a ``sequential`` reference (or several, ``{instance: candidates}``, each measured on its
own), every method of ``ffsolve.available_methods()`` through ``ffsolve.solve`` (and, for a
recurrence experiment, every method of ``ffsolve.available_recurrence_methods()``), and every fast
path of its own (cached samplers, batched blocks, scans), each a
:class:`ffsolve.kit.Candidate` returning an ``ffsolve.SolveResult``. Through the same harness the
workflow uses, at tol = 0 every run must equal sequential bit for bit (or within the tolerance it
declares, with its reason), converge in at most T parallel steps, and its timed program must give
the traced program's output.

The candidates are measured in a fresh process per experiment at one compute thread
(tests/threads_child.py, the ``one_thread_children`` job of tests/children.py, run in the
background while the rest of the suite runs: tests/prefetch.py); tests/experiments/test_threads.py compares
the same outputs with those at two threads.
"""

import importlib

import pytest

import ffsolve
from ffsolve.experiments import EXPERIMENTS


def _system(experiment):
    try:
        return importlib.import_module(f"ffsolve.experiments.{experiment}.system")
    except ModuleNotFoundError as err:
        pytest.fail(f"ffsolve.experiments.{experiment}.system is missing: {err}")


@pytest.fixture(scope="module", params=EXPERIMENTS)
def experiment(request):
    return request.param


@pytest.fixture(scope="module")
def measured(experiment, one_thread_children):
    """What the harness measured of each contract candidate (tests/threads_child.py's ``describe``),
    keyed ``<instance>/<run>`` (each instance measured on its own against its own sequential
    reference; the instance empty where the experiment has one)."""
    _system(experiment)
    report, _ = one_thread_children[experiment].result()
    return experiment, report["contract"]


def _expected_methods(experiment):
    """Every method of ffsolve.solve; for recurrence experiments (system.RECURRENCE) also every
    method of ffsolve.solve_recurrence."""
    expected = set(ffsolve.available_methods())
    if getattr(_system(experiment), "RECURRENCE", False):
        expected |= set(ffsolve.available_recurrence_methods())
    return expected


def test_every_library_method_is_covered(measured):
    experiment, measurements = measured
    methods = {m["method"] for m in measurements.values()}
    missing = _expected_methods(experiment) - methods
    assert not missing, f"{experiment}: contract_candidates() lacks {sorted(missing)}"


def test_every_run_is_exact_or_within_its_declared_tolerance(measured):
    experiment, measurements = measured
    for name, m in measurements.items():
        where = f"{experiment}/{name}"
        assert m["solve_result"], f"{where}: not an ffsolve.SolveResult"
        assert m["tol"] == 0.0, f"{where}: the contract is checked at tol = 0"
        assert m["converged"], where
        assert 1 <= m["iterations"] <= m["sequence_length"], where
        assert m["network_evaluations"] > 0, where
        if m["tolerance"] is None:
            assert m["bitwise_equal"], f"{where}: max |diff| {m['max_abs_diff']:.3g}, and no tolerance is declared"
        else:
            assert m["within_tolerance"], f"{where}: max |diff| {m['max_abs_diff']:.3g} breaks {m['tolerance']['rule']}"
            assert len(m["tolerance"]["why"]) > 20, f"{where}: say why bitwise equality cannot hold"


def test_every_run_has_a_traced_twin(measured):
    # measure() runs each traced program once and stops the child if its output or iteration count
    # differs from the timed program's; here we only check that none was left out.
    experiment, measurements = measured
    untraced = [name for name, m in measurements.items() if not m["traced"]]
    assert not untraced, f"{experiment}: runs without a traced program: {untraced}"
