"""The config helpers of common.smk: typed overrides, the per-dataset layout, key order."""

import pytest

from ffsolve.workflow.config import canonical, coerce_to_schema, dataset_settings, override_schema

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activate": {"type": "boolean", "default": True},
        "datasets": {"type": "array", "items": {"type": "string"}, "default": ["mnist"]},
        "methods": {"type": "array", "items": {"type": "string"}, "default": ["jacobi"]},
        "per_dataset": {"type": "object", "default": {}, "additionalProperties": {"type": "object"}},
        "checkpoint": {"type": ["string", "null"], "default": None},
        "lam": {"type": "number", "default": 1e-6},
        "train": {
            "type": "object", "default": {}, "additionalProperties": False,
            "required": ["steps"],
            "properties": {"steps": {"type": "integer", "default": 10},
                           "lr": {"type": "number", "default": 0.1},
                           "name": {"type": "string", "default": "x"}},
        },
        "block_sizes": {"type": "array", "items": {"type": "integer"}, "default": [4]},
    },
}


@pytest.mark.parametrize("given, expected", [
    ({"train": {"steps": "100"}}, {"train": {"steps": 100}}),
    ({"train": {"lr": "1e-3"}}, {"train": {"lr": 1e-3}}),           # PyYAML alone keeps "1e-3" a string
    ({"train": {"name": "5"}}, {"train": {"name": "5"}}),            # strings stay strings
    ({"activate": "false"}, {"activate": False}),
    ({"block_sizes": ["28", "112"]}, {"block_sizes": [28, 112]}),
    ({"train": {"steps": "many"}}, {"train": {"steps": "many"}}),    # left for validation to name
    ({"per_dataset": {"x": {"lam": "0.05"}}}, {"per_dataset": {"x": {"lam": "0.05"}}}),
])
def test_strings_are_read_by_the_schema_type(given, expected):
    assert coerce_to_schema(given, SCHEMA) == expected


def test_per_dataset_overrides_merge_into_the_shared_settings():
    section = {"activate": True, "datasets": ["mnist", "cifar10"], "methods": ["jacobi"],
               "lam": 1e-6, "train": {"steps": 10, "lr": 0.1},
               "per_dataset": {"cifar10": {"lam": 0.05, "train": {"steps": 99}}}}
    assert dataset_settings(section, "mnist") == {"lam": 1e-6, "methods": ["jacobi"],
                                                  "train": {"lr": 0.1, "steps": 10}}
    assert dataset_settings(section, "cifar10") == {"lam": 0.05, "methods": ["jacobi"],
                                                    "train": {"lr": 0.1, "steps": 99}}


def test_the_override_schema_has_no_defaults_and_no_layout_keys():
    schema = override_schema(SCHEMA)
    assert set(schema["properties"]) == {"checkpoint", "lam", "train"}
    assert "default" not in schema["properties"]["train"]["properties"]["steps"]
    assert "required" not in schema["properties"]["train"]  # an override names only what it changes
    assert schema["additionalProperties"] is False


def test_canonical_orders_keys_at_every_level():
    assert list(canonical({"b": 1, "a": {"d": 2, "c": [{"f": 1, "e": 2}]}})) == ["a", "b"]
    assert list(canonical({"a": {"d": 2, "c": 1}})["a"]) == ["c", "d"]
