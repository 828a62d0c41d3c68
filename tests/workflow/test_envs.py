"""The conda environments the rules name parse, pin exactly, and agree with pyproject.toml."""

import re
import tomllib

import pytest
import yaml

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)$")


def project_pins(repo_root):
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        match = PIN.match(requirement)
        assert match, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[match[1].lower()] = match[2]
    return pins


ENV_NAMES = ("torch", "jax", "notebook")


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_pins_agree_with_pyproject(repo_root, name):
    env = yaml.safe_load((repo_root / "envs" / f"{name}.yaml").read_text())
    assert env["channels"][0] == "conda-forge"
    deps = env["dependencies"]
    assert "python=3.11" in deps, "envs must pin the Python the project is tested on"
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    pins = project_pins(repo_root)
    for requirement in pip:
        match = PIN.match(requirement)
        assert match, f"envs/{name}.yaml: {requirement!r} is not pinned with =="
        package, version = match[1].lower(), match[2]
        assert package in pins, f"envs/{name}.yaml pins {package}, which pyproject.toml lacks"
        assert pins[package] == version, (
            f"envs/{name}.yaml pins {package}=={version}, pyproject.toml has {pins[package]}"
        )


def test_every_rule_names_an_existing_env(repo_root):
    used = set()
    for smk in (repo_root / "workflow" / "rules").glob("*.smk"):
        used.update(re.findall(r'ENVS\["(\w+)"\]', smk.read_text()))
    assert used, "no rule names a conda env"
    assert used <= set(ENV_NAMES), f"rules name unknown envs: {used - set(ENV_NAMES)}"
