"""made's config section: its schema, the per_dataset overrides, and how the rules read it."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from ffsolve.workflow.config import override_schema

REPO = Path(__file__).resolve().parents[3]
SCHEMA = yaml.safe_load((REPO / "src" / "ffsolve" / "experiments" / "made" / "config.schema.yaml").read_text())


def errors(instance, schema=SCHEMA):
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]


def test_every_key_is_typed_and_described_without_a_default():
    # the values live in config/config.yaml (the one set of defaults), not in the schema
    def walk(properties, path):
        for key, spec in properties.items():
            where = f"{path}.{key}"
            assert "type" in spec and "description" in spec and "default" not in spec, where
            if spec["type"] == "object" and "properties" in spec:
                assert spec.get("additionalProperties") is False, where
                walk(spec["properties"], where)

    assert SCHEMA["additionalProperties"] is False
    walk(SCHEMA["properties"], "made")


@pytest.mark.parametrize("configfile",
                         ["config/config.yaml", "config/paper.yaml", "tests/workflow/e2e/config.yaml"])
def test_shipped_configs_are_valid(configfile):
    assert errors(yaml.safe_load((REPO / configfile).read_text())["made"]) == []


def test_unknown_keys_and_a_missing_reference_run_are_refused():
    assert any("'batchsize' was unexpected" in e for e in errors({"sample": {"batchsize": 4}}))
    # The old layout (λ and checkpoint keyed by dataset) is refused, not silently ignored.
    assert errors({"logit_lambda": {"mnist": 1e-6}})
    assert errors({"checkpoint": {"mnist": None}})
    # Every run is checked against sequential in the same process: it must be configured.
    assert errors({"methods": ["jacobi", "gs_jacobi"]})


def test_per_dataset_entries_override_settings_but_not_the_runs():
    per_dataset = override_schema(SCHEMA)
    assert errors({"logit_lambda": 0.05, "checkpoint": "m.pt", "train": {"steps": 5}}, per_dataset) == []
    assert errors({"logit_lambda": 0.5}, per_dataset)  # outside (0, 0.5)
    assert errors({"methods": ["sequential"]}, per_dataset)  # the same runs for every dataset
    assert errors({"block_sizes": [4]}, per_dataset)
    assert errors({"train": {"epochs": 2}}, per_dataset)
    assert errors({"per_dataset": {"imagenet": {}}})  # only datasets MADE knows
