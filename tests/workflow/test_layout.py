"""The experiments' layouts (ffsolve.experiments.<name>.layout): one list of experiments, each with
a torch- and JAX-free layout, whose run names are the ones its measure job writes for every
dataset of the shipped configs (common.smk expands the rules' outputs from the layout; the job
names its records from its own settings: the two must agree)."""

import json
import subprocess
import sys

import pytest
import yaml

from ffsolve.experiments import EXPERIMENTS, layout_of
from ffsolve.kit import settings_from
from ffsolve.workflow.config import dataset_settings, merged_config


def test_the_experiment_list_is_the_configs_sections(repo_root):
    shipped = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    assert {k for k in shipped if k not in ("data", "seed", "threads", "device", "timing")} == set(EXPERIMENTS)
    for name in EXPERIMENTS:
        assert (repo_root / "workflow" / "rules" / f"{name}.smk").exists(), name
        assert (repo_root / "src" / "ffsolve" / "experiments" / name / "config.schema.yaml").exists(), name
    with pytest.raises(ValueError, match="'nonesuch'"):
        layout_of("nonesuch")


def test_layouts_import_neither_torch_nor_jax():
    code = ("import json, sys\nfrom ffsolve.experiments import EXPERIMENTS, layout_of\n"
            "found = {n: [a for a in ('runs', 'figures', 'FIGURE_RUNS') if hasattr(layout_of(n), a)]"
            " for n in EXPERIMENTS}\n"
            "print(json.dumps([found, sorted(m for m in ('torch', 'jax', 'flax') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found, heavy = json.loads(out.stdout)
    assert heavy == [], f"a layout imported {heavy}"
    assert all(v == ["runs", "figures", "FIGURE_RUNS"] for v in found.values()), found


def _job_runs(name, settings):
    """The run names the measure job of `name` writes, from the settings the rule hands it."""
    from importlib import import_module

    experiment = import_module(f"ffsolve.experiments.{name}.experiment")
    if name in ("made", "rnn_forward"):
        keys = layout_of(name).MEASURE_KEYS
        return list(settings_from(experiment.MeasureSettings, {k: settings[k] for k in keys}, name).runs)
    parsed = settings_from(experiment.MeasureSettings, settings, name)
    if name == "densenet":
        return [spec.name for spec in experiment.run_specs(parsed)]
    if name == "rnn_backprop":
        return [spec.name for spec in experiment.runs(parsed)]
    return list(experiment.runs(parsed))


@pytest.mark.parametrize("configs", [("config/config.yaml",), ("config/config.yaml", "config/paper.yaml")],
                         ids=["default", "paper"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_rules_runs_are_the_jobs_runs(repo_root, name, configs):
    config = merged_config(None if len(configs) == 1 else repo_root / configs[1], root=repo_root)
    section = config[name]
    for dataset in section["datasets"]:
        settings = dataset_settings(section, dataset)
        rule_runs, job_runs = layout_of(name).runs(section), _job_runs(name, settings)
        # `auto` is one more record of every job that lists it (some jobs add it apart).
        assert ("auto" in rule_runs) == ("auto" in section["methods"])
        assert [r for r in rule_runs if r != "auto"] == [r for r in job_runs if r != "auto"], (name, dataset)
