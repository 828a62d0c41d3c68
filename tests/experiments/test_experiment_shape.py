"""The literal experiment contract (CONTRIBUTING.md, "The shape of one experiment"), checked in
every folder of ``ffsolve.experiments.EXPERIMENTS`` (in the style of tests/experiments/test_contract.py, which
checks what the systems compute; this checks the names and signatures a newcomer relies on).

* ``layout.py`` says whether the experiment trains: ``TRAIN_KEYS``, the keys its train job reads,
  is empty for an experiment with no train job (``solver_demo``: a random map, no model;
  ``rnn_backprop``: training is what its measure job times). Such an experiment has none of
  ``TrainSettings``, ``train`` and ``train_job``: the test requires their absence, not stubs.
* ``experiment.py``: ``MeasureSettings`` and, if it trains, ``TrainSettings`` (dataclasses: the
  whole of what the job reads); ``measure(settings, *, dataset, seed, timing, metrics, traces,
  threads=None, autotune=None, <its own inputs>)`` and ``train(settings, *, ..., seed, data,
  checkpoint, record, ...)``, everything after ``settings`` keyword-only, the shared names first
  (measure) or in the same order (train); ``measure_job(job)`` and ``train_job(job)`` for the rules.
* ``system.py``: ``candidates(...)`` (its own inputs) and ``contract_candidates()`` (no argument).
* ``model.py``, where the experiment has a model: ``save_checkpoint(model, path, metadata)`` and
  ``load_checkpoint(path, ...)``, raising ``ffsolve.kit.CheckpointError``.
* One error type each: no experiment module defines an exception class of its own (settings
  errors are ``ffsolve.kit.SettingsError``, checkpoints ``ffsolve.kit.CheckpointError``, data
  ``ffsolve.data.DataError``).

An experiment not yet on the contract is named in :data:`NOT_YET` with the checks it fails and
why; those checks are strict expected failures, so the entry has to go once it complies.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from ffsolve.experiments import EXPERIMENTS, layout_of
from ffsolve.kit import CheckpointError

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "ffsolve" / "experiments"
# experiment -> {check: why}; strict xfail (a check that starts passing fails until removed here).
NOT_YET: dict = {}


def experiments(check: str) -> list:
    return [pytest.param(e, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[e][check]))
            if check in NOT_YET.get(e, {}) else e for e in EXPERIMENTS]


MEASURE_SHARED = ("dataset", "seed", "timing", "metrics", "traces", "threads", "autotune")
TRAIN_SHARED = ("seed", "data", "checkpoint", "record")


def _module(experiment, role):
    return importlib.import_module(f"ffsolve.experiments.{experiment}.{role}")


def _after_settings(function):
    """The parameters after ``settings``; the first must be ``settings``, the rest keyword-only."""
    params = list(inspect.signature(function).parameters.values())
    assert params and params[0].name == "settings" and params[0].kind is params[0].POSITIONAL_OR_KEYWORD, (
        f"{function.__module__}.{function.__name__} must take `settings` first")
    rest = params[1:]
    positional = [p.name for p in rest if p.kind is not p.KEYWORD_ONLY]
    assert positional == [], f"{function.__module__}.{function.__name__}: {positional} not keyword-only"
    return rest


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_layout_says_whether_it_trains(experiment):
    keys = getattr(layout_of(experiment), "TRAIN_KEYS", None)
    assert isinstance(keys, tuple), f"{experiment}/layout.py must set TRAIN_KEYS (empty: no train job)"


@pytest.mark.parametrize("experiment", experiments("measure"))
def test_measure_has_the_shared_signature(experiment):
    module = _module(experiment, "experiment")
    assert dataclasses.is_dataclass(getattr(module, "MeasureSettings", None)), f"{experiment}: MeasureSettings"
    rest = _after_settings(module.measure)
    names = [p.name for p in rest]
    assert tuple(names[: len(MEASURE_SHARED)]) == MEASURE_SHARED, f"{experiment}.measure: {names}"
    defaults = {p.name: p.default for p in rest}
    assert defaults["threads"] is None and defaults["autotune"] is None
    assert list(inspect.signature(module.measure_job).parameters) == ["job"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_train_is_there_exactly_when_the_layout_trains(experiment):
    module = _module(experiment, "experiment")
    trains = bool(layout_of(experiment).TRAIN_KEYS)
    present = [name for name in ("TrainSettings", "train", "train_job") if hasattr(module, name)]
    if not trains:
        assert present == [], f"{experiment} trains nothing (TRAIN_KEYS = ()) but defines {present}"
        return
    assert present == ["TrainSettings", "train", "train_job"], f"{experiment} lacks some of them: {present}"
    assert dataclasses.is_dataclass(module.TrainSettings)
    names = [p.name for p in _after_settings(module.train)]
    assert [n for n in names if n in TRAIN_SHARED] == list(TRAIN_SHARED), f"{experiment}.train: {names}"
    assert list(inspect.signature(module.train_job).parameters) == ["job"]


@pytest.mark.parametrize("experiment", experiments("system"))
def test_system_offers_candidates_and_a_contract_instance(experiment):
    system = _module(experiment, "system")
    assert callable(getattr(system, "candidates", None)), f"{experiment}/system.py: candidates(...)"
    required = [p for p in inspect.signature(system.contract_candidates).parameters.values()
                if p.default is p.empty]
    assert required == [], f"{experiment}/system.py: contract_candidates() takes no argument"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_checkpoints_have_one_signature_and_one_error(experiment):
    if not (PACKAGE / experiment / "model.py").exists():
        pytest.skip(f"{experiment} has no model (and no checkpoint)")
    model = _module(experiment, "model")
    save = list(inspect.signature(model.save_checkpoint).parameters)
    assert save[:3] == ["model", "path", "metadata"], f"{experiment}: save_checkpoint{tuple(save)}"
    assert list(inspect.signature(model.load_checkpoint).parameters)[0] == "path"
    assert getattr(model, "CheckpointError", None) is CheckpointError, (
        f"{experiment}/model.py must raise ffsolve.kit.CheckpointError")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_experiment_defines_its_own_error_type(experiment):
    own = []
    for path in sorted((PACKAGE / experiment).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    (getattr(b, "id", None) or getattr(b, "attr", "")).endswith(("Error", "Exception"))
                    for b in node.bases):
                own.append(f"{path.name}:{node.lineno} {node.name}")
    assert own == []
