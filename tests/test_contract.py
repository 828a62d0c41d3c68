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
"""

import importlib

import pytest

import ffsolve
from ffsolve.kit import measure

EXPERIMENTS = ("solver_demo", "made", "pixelcnnpp", "densenet", "rnn_backprop", "rnn_forward")


def _system(experiment):
    try:
        return importlib.import_module(f"ffsolve.experiments.{experiment}.system")
    except ModuleNotFoundError as err:
        pytest.fail(f"ffsolve.experiments.{experiment}.system is missing: {err}")


def _measure(candidates):
    """One instance (a list of candidates), or several ({instance: candidates}), each measured on
    its own against its own sequential reference; measurements keyed ``<instance>/<run>``."""
    if isinstance(candidates, dict):
        return {f"{group}/{name}": m for group, runs in candidates.items()
                for name, m in measure(runs, repeats=2, warmup=0).items()}
    return measure(candidates, repeats=2, warmup=0)


@pytest.fixture(scope="module", params=EXPERIMENTS)
def measured(request):
    system = _system(request.param)
    return request.param, _measure(system.contract_candidates())


def _expected_methods(experiment):
    """Every method of ffsolve.solve; for recurrence experiments (system.RECURRENCE) also every
    method of ffsolve.solve_recurrence."""
    expected = set(ffsolve.available_methods())
    if getattr(_system(experiment), "RECURRENCE", False):
        expected |= set(ffsolve.available_recurrence_methods())
    return expected


def test_every_library_method_is_covered(measured):
    experiment, measurements = measured
    methods = {m.candidate.spec.method for m in measurements.values()}
    missing = _expected_methods(experiment) - methods
    assert not missing, f"{experiment}: contract_candidates() lacks {sorted(missing)}"


def test_every_run_is_exact_or_within_its_declared_tolerance(measured):
    experiment, measurements = measured
    for name, m in measurements.items():
        where = f"{experiment}/{name}"
        assert isinstance(m.result, ffsolve.SolveResult), where
        assert m.result.tol == 0.0, f"{where}: the contract is checked at tol = 0"
        assert m.result.converged, where
        assert 1 <= m.result.iterations <= m.result.sequence_length, where
        assert m.result.network_evaluations > 0, where
        if m.candidate.tolerance is None:
            assert m.bitwise_equal, f"{where}: max |diff| {m.max_abs_diff:.3g}, and no tolerance is declared"
        else:
            assert m.within_tolerance, f"{where}: max |diff| {m.max_abs_diff:.3g} breaks {m.candidate.tolerance.rule}"
            assert len(m.candidate.tolerance.why) > 20, f"{where}: say why bitwise equality cannot hold"


def test_every_run_has_a_traced_twin(measured):
    # measure() runs each traced program once and stops the job if its output or iteration count
    # differs from the timed program's; here we only check that none was left out.
    experiment, measurements = measured
    untraced = [name for name, m in measurements.items() if m.candidate.traced is None]
    assert not untraced, f"{experiment}: runs without a traced program: {untraced}"
