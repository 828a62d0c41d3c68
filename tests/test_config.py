"""The config contract: validated before any job, unknown keys named, docs in step with schemas."""

import pytest
import yaml

from ffsolve import config_docs
from workflow_helpers import copy_workflow, snakemake, write_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config_wf"))


def test_config_readme_documents_every_schema_key(repo_root):
    text = (repo_root / "config" / "README.md").read_text()
    assert config_docs.updated_readme(text) == text, (
        "config/README.md is out of date: run python -m ffsolve.config_docs --write"
    )
    for key, *_ in config_docs.key_rows(config_docs.load_schema("config")):
        assert f"`{key}`" in text


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_shipped_configs_validate_and_resolve(workdir, configfile):
    proc = snakemake(workdir, "-n", "--configfile", configfile, "--", "figures", check=False)
    # paper.yaml may name data folders that do not exist here; it must still validate.
    assert "ValidationError" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


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


def test_wrong_type_is_refused_before_any_job(workdir):
    path = write_config(workdir, {"threads": "two"}, "bad_type.yaml")
    proc = snakemake(workdir, "--configfile", str(path), check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "'two' is not of type 'integer'" in out
    assert not (workdir / "results").exists()


def test_schemas_give_every_key_a_type_default_and_description(repo_root):
    def walk(schema, path):
        for key, spec in schema.get("properties", {}).items():
            where = f"{path}{key}"
            if "$ref" in spec:  # a shared definition, checked where it is defined ($defs)
                continue
            assert "description" in spec, f"{where} has no description"
            assert "default" in spec or "$ref" in spec, f"{where} has no default"
            if spec.get("type") == "object" and "properties" in spec:
                assert spec.get("additionalProperties") is False, f"{where} allows unknown keys"
                walk(spec, f"{where}.")

    for schema_path in (repo_root / "workflow" / "schemas").glob("*.schema.yaml"):
        schema = yaml.safe_load(schema_path.read_text())
        assert schema.get("additionalProperties") is False, f"{schema_path.name} allows unknown keys"
        walk(schema, f"{schema_path.name}:")
        for name, definition in schema.get("$defs", {}).items():
            walk(definition, f"{schema_path.name}:$defs.{name}.")
