"""Every experiment job runs through the one entry point scripts/experiment_job.py: rule
``<exp>_<step>`` runs ``ffsolve.experiments.<exp>.experiment.<step>_job``
(ffsolve.workflow.jobs.experiment_adapter). Every such rule of workflow/rules/ finds its adapter,
and a rule without one stops naming the rule and the adapter."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from ffsolve.experiments import EXPERIMENTS
from ffsolve.workflow.jobs import experiment_adapter, run_experiment_job

SCRIPT = "scripts/experiment_job.py"


def _rules_running_the_entry_point(repo_root) -> list[str]:
    """The rules whose script is the entry point, read from workflow/rules/*.smk (a rule derived
    with `use rule A as B` runs A's script unless it names its own)."""
    scripts, parents = {}, {}
    for path in sorted((repo_root / "workflow" / "rules").glob("*.smk")):
        # top-level blocks: a line at column 0 starts one
        for block in re.split(r"\n(?=\S)", path.read_text()):
            if match := re.match(r"rule (\w+):", block):
                scripts[match[1]] = SCRIPT in block
            elif match := re.match(r"use rule (\w+) as (\w+)", block):
                parents[match[2]] = match[1]
                scripts[match[2]] = SCRIPT in block or None
    for child, parent in parents.items():
        if scripts[child] is None:
            scripts[child] = scripts[parent]
    return sorted(name for name, runs in scripts.items() if runs)


def test_every_experiment_rule_finds_its_adapter(repo_root):
    rules = _rules_running_the_entry_point(repo_root)
    assert {"made_measure", "rnn_backprop_convergence", "speculative_measure_jax"} <= set(rules), rules
    assert {rule.split("_measure")[0] for rule in rules if "_measure" in rule} == set(EXPERIMENTS)
    for rule in rules:
        adapter = experiment_adapter(rule)
        experiment = max((e for e in EXPERIMENTS if rule.startswith(f"{e}_")), key=len)
        assert adapter.__module__ == f"ffsolve.experiments.{experiment}.experiment", rule
        assert rule[len(experiment) + 1:].startswith(adapter.__name__.removesuffix("_job")), rule


def test_the_rule_name_picks_the_experiment_and_the_step():
    assert experiment_adapter("rnn_backprop_convergence").__name__ == "convergence_job"
    assert experiment_adapter("rnn_forward_train").__module__ == "ffsolve.experiments.rnn_forward.experiment"
    # a derived rule (use rule speculative_measure as speculative_measure_jax) runs the same adapter
    assert experiment_adapter("speculative_measure_jax") is experiment_adapter("speculative_measure")


def test_a_missing_adapter_is_named_with_its_rule():
    with pytest.raises(LookupError, match=r"rule 'solver_demo_train' runs "
                       r"ffsolve\.experiments\.solver_demo\.experiment\.train_job, which does not exist"):
        experiment_adapter("solver_demo_train")
    with pytest.raises(LookupError, match=r"rule 'summary_table'.*begins with no experiment"):
        experiment_adapter("summary_table")


def test_a_missing_adapter_fails_the_job_into_its_log(tmp_path):
    smk = SimpleNamespace(log=[str(tmp_path / "job.log")], threads=1, input=[], output=[], params={},
                          wildcards=SimpleNamespace(items=lambda: []), rule="made_sample")
    with pytest.raises(LookupError, match="made_sample"):
        run_experiment_job(smk)
    text = (tmp_path / "job.log").read_text()
    assert "rule made_sample failed" in text and "sample_job, which does not exist" in text
