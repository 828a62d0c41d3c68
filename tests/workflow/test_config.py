"""The config contract: validated before any job, unknown keys named, docs in step with schemas."""

import fnmatch
import json
import tomllib

import jsonschema
import pytest
import yaml

from ffsolve.experiments import EXPERIMENTS
from ffsolve.workflow import config_docs
from ffsolve.workflow.config import config_schema, experiment_schema_path
from workflow_helpers import copy_workflow, planned_jobs, snakemake, write_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config_wf"))


def test_config_readme_documents_every_schema_key(repo_root):
    text = (repo_root / "config" / "README.md").read_text()
    assert config_docs.updated_readme(text, repo_root) == text, (
        "config/README.md is out of date: run python -m ffsolve.workflow.config_docs --write"
    )
    for key, *_ in config_docs.key_rows(config_docs.load_schema("config", repo_root), root=repo_root):
        assert f"`{key}`" in text


def test_the_default_config_resolves_every_experiment(workdir):
    proc = snakemake(workdir, "-n", "--configfile", "config/config.yaml", "--", "figures")
    jobs = planned_jobs(proc.stdout + proc.stderr)
    for rule in ("data_prepare", "solver_demo_measure", "made_measure", "pixelcnnpp_measure",
                 "densenet_measure", "rnn_backprop_measure", "summary", "speedups"):
        assert jobs.get(rule, 0) >= 1, f"{rule} is not planned: {jobs}"


def test_the_paper_config_resolves_once_imagenet_is_named(workdir, tmp_path):
    # paper.yaml needs the user's ImageNet validation folder; any existing folder resolves the DAG.
    proc = snakemake(workdir, "-n", "--configfile", "config/paper.yaml",
                     "--config", f"data={{imagenet_val: {{folder: {tmp_path}}}}}", "--", "figures")
    jobs = planned_jobs(proc.stdout + proc.stderr)
    assert jobs.get("densenet_measure", 0) >= 1 and jobs.get("made_measure", 0) >= 2, jobs


def test_the_paper_config_without_imagenet_names_the_key_to_set(workdir):
    proc = snakemake(workdir, "-n", "--configfile", "config/paper.yaml", "--", "figures", check=False)
    assert proc.returncode != 0
    assert "data.imagenet_val.folder" in proc.stderr + proc.stdout


def test_a_nested_command_line_override_is_typed_and_keeps_its_siblings(tmp_path):
    # Snakemake hands nested --config values over as strings ('30'); the schema's types apply.
    workdir = copy_workflow(tmp_path)  # its own copy: this one runs a job
    base = write_config(workdir, {"solver_demo": {"length": 24, "batch": 3, "block_sizes": [5],
                                                  "methods": ["sequential", "jacobi"]}},
                        "override_base.yaml")
    snakemake(workdir, "--configfile", str(base), "--config", "solver_demo={length: 30}",
              "timing={repeats: 1, warmup: 0}", "--", "results/solver_demo/tanh_map/jacobi/metrics.json")
    record = json.loads((workdir / "results/solver_demo/tanh_map/jacobi/metrics.json").read_text())
    assert record["sequence_length"] == 30  # the override, as an integer
    assert record["batch"] == 3  # a sibling the override did not name, kept from the file
    assert record["timing"]["repeats"] == 1


def test_a_nested_override_of_the_wrong_type_is_refused_naming_it(workdir):
    proc = snakemake(workdir, "-n", "--config", "solver_demo={length: many}", check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "config key 'solver_demo' is invalid" in out and "'many' is not of type 'integer'" in out


def test_a_per_dataset_override_with_an_unknown_key_is_named(workdir):
    path = write_config(workdir, {"solver_demo": {"per_dataset": {"tanh_map": {"lenght": 5}}}},
                        "bad_override.yaml")
    proc = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "solver_demo.per_dataset.tanh_map" in out and "'lenght' was unexpected" in out


def test_every_top_level_key_is_known(workdir):
    path = write_config(workdir, {"sead": 3}, "typo_top.yaml")
    proc = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert "'sead' was unexpected" in proc.stderr + proc.stdout


def test_unknown_key_inside_a_section_is_named_with_its_section(workdir):
    path = write_config(workdir, {"solver_demo": {"lenght": 5}}, "typo_nested.yaml")
    proc = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "config key 'solver_demo' is invalid" in out and "'lenght' was unexpected" in out


def test_an_old_key_name_is_refused_naming_it(workdir):
    # One name per idea: a batch size is `batch` and a learning rate `lr` in every section; the old
    # names (batch_size, learning_rate, sample_batch_size) are unknown keys, with no alias.
    path = write_config(workdir, {"made": {"train": {"batch_size": 100}}}, "old_name.yaml")
    proc = snakemake(workdir, "-n", "--configfile", str(path), check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "config key 'made' is invalid" in out and "'batch_size' was unexpected" in out


def test_wrong_type_is_refused_before_any_job(workdir):
    path = write_config(workdir, {"threads": "two"}, "bad_type.yaml")
    proc = snakemake(workdir, "--configfile", str(path), check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "'two' is not of type 'integer'" in out
    assert not (workdir / "results").exists()


def _schemas(repo_root):
    paths = sorted((repo_root / "workflow" / "schemas").glob("*.schema.yaml"))
    paths += [experiment_schema_path(name, repo_root) for name in EXPERIMENTS]
    for schema_path in paths:
        yield str(schema_path.relative_to(repo_root)), yaml.safe_load(schema_path.read_text())


def test_each_experiment_schema_lives_in_its_folder_and_ships_with_the_package(repo_root):
    # src/ffsolve/experiments/<name>/config.schema.yaml, package data (a non-editable install has it)
    patterns = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name in EXPERIMENTS:
        path = experiment_schema_path(name, repo_root)
        assert path.exists(), path
        assert experiment_schema_path(name).samefile(path)  # the imported package's is the checkout's
        assert any(fnmatch.fnmatch(f"{name}/config.schema.yaml", pattern)
                   for pattern in patterns.get("ffsolve.experiments", [])), f"{path} is not package data"
    assert sorted(p.name for p in (repo_root / "workflow" / "schemas").glob("*.yaml")) == [
        "config.schema.yaml", "data.schema.yaml"]


def test_the_top_level_schema_names_no_experiment_and_gains_one_entry_each(repo_root):
    top = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert not set(top["properties"]) & set(EXPERIMENTS)
    schema = config_schema(top, repo_root)
    assert set(schema["properties"]) == set(top["properties"]) | set(EXPERIMENTS)
    assert schema["additionalProperties"] is False
    validator = jsonschema.Draft202012Validator(schema)
    assert [e.message for e in validator.iter_errors({"made": {}, "sead": 3})] == [
        "Additional properties are not allowed ('sead' was unexpected)"]
    assert [e.message for e in validator.iter_errors({"made": []})] == ["[] is not of type 'object'"]
    with pytest.raises(ValueError, match="names the experiment 'made'"):
        config_schema({**top, "properties": {**top["properties"], "made": {"type": "object"}}})


def test_schemas_give_every_key_a_type_and_description_and_no_default(repo_root):
    def walk(schema, path):
        for key, spec in schema.get("properties", {}).items():
            where = f"{path}{key}"
            if "$ref" in spec:  # a shared definition, checked where it is defined ($defs)
                continue
            assert "description" in spec, f"{where} has no description"
            assert {"type", "oneOf", "anyOf"} & set(spec), f"{where} has no type"
            if spec.get("type") == "object" and "properties" in spec:
                assert spec.get("additionalProperties") is False, f"{where} allows unknown keys"
                walk(spec, f"{where}.")

    def defaults(node, path):
        if isinstance(node, dict):
            found = [path] if "default" in node else []
            return found + [d for k, v in node.items() for d in defaults(v, f"{path}/{k}")]
        if isinstance(node, list):
            return [d for i, v in enumerate(node) for d in defaults(v, f"{path}/{i}")]
        return []

    for name, schema in _schemas(repo_root):
        assert schema.get("additionalProperties") is False, f"{name} allows unknown keys"
        walk(schema, f"{name}:")
        for def_name, definition in schema.get("$defs", {}).items():
            walk(definition, f"{name}:$defs.{def_name}.")
        # config/config.yaml is the one set of defaults; a schema default would compete with it
        assert defaults(schema, name) == [], f"schema defaults (set the value in config/config.yaml): {defaults(schema, name)}"


def test_the_shipped_config_sets_every_schema_key(repo_root):
    default = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    rows = config_docs.key_rows(config_docs.load_schema("config", repo_root), root=repo_root)
    assert len(rows) > 100
    missing = [key for key, *_ in rows if config_docs.value_at(default, key) is config_docs.MISSING]
    assert missing == [], f"keys the schemas know but config/config.yaml does not set: {missing}"


def test_config_readme_shows_the_values_runs_use(repo_root):
    text = (repo_root / "config" / "README.md").read_text()
    # the embedded default's own value, and paper.yaml's where it differs (merged over the default)
    assert "| `pixelcnnpp.train.steps` | integer | `150` | `20000` |" in text
    assert "| `timing.repeats` | integer | `3` | `10` |" in text
    assert "| `seed` | integer | `1234` |  |" in text
    assert "(missing)" not in text
