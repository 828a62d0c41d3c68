"""Pure helpers the Snakefile uses on the config: typed command-line overrides, one per-dataset
layout, and key order. The experiments never read the config; only workflow/rules/common.smk
calls these.

* ``coerce_to_schema``: Snakemake hands nested ``--config`` values over as strings
  (``--config 'made={train: {steps: 100}}'`` gives ``{"steps": "100"}``); each string where the
  schema wants a number, an integer, a boolean or null is read as YAML and kept if it has that type.
  Sibling keys that were not named are untouched (Snakemake merges nested overrides key by key).
* ``dataset_settings``: every experiment section has the same layout — ``datasets``, ``methods``,
  ``block_sizes``, shared settings, and ``per_dataset.<dataset>`` overriding any of them for one
  dataset. The settings one dataset's jobs see are the shared ones with its overrides merged in.
* ``merged_config``: a config file merged over ``config/config.yaml``, the one set of defaults
  (the schemas hold none), as Snakemake merges a ``--configfile`` over the Snakefile's.
* ``override_schema``: the schema a ``per_dataset`` entry is checked against — the section's own,
  without ``required`` (so an override names only what it changes) and without the layout keys,
  methods and block sizes (the runs are the same for every dataset).
* ``experiment_schema_path`` and ``config_schema``: each experiment's section is described by the
  ``config.schema.yaml`` in its own folder (package data); ``workflow/schemas/config.schema.yaml``
  names no experiment, and ``config_schema`` adds one entry per name in
  ``ffsolve.experiments.EXPERIMENTS``, so unknown top-level keys are still refused.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from ffsolve.experiments import EXPERIMENTS

EXPERIMENT_SCHEMA = "config.schema.yaml"

LAYOUT_KEYS = ("activate", "datasets", "per_dataset")
# The runs (methods x block sizes) are the same for every dataset: one harness job per dataset
# writes one folder per run, and Snakemake's outputs cannot vary by dataset within a rule.
SHARED_ONLY = LAYOUT_KEYS + ("methods", "block_sizes", "frontier_tols")
_SCALAR_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _types(schema: Mapping) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    ref = schema.get("$ref")
    if not ref:
        return schema
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return _resolve(node, root)


def coerce_to_schema(value: Any, schema: Mapping, root: Mapping | None = None) -> Any:
    """``value`` with strings read as YAML where the schema asks for a non-string scalar."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        coerced = coerce_to_schema(value, option, root)
        if coerced is not value:
            return coerced
    types = _types(schema)
    if isinstance(value, str) and "string" not in types and any(t in _SCALAR_TYPES for t in types):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, str) and "number" in types:
            try:  # PyYAML reads "1e-3" (no dot) as a string; YAML 1.2 and users read a number
                parsed = float(value)
            except ValueError:
                return value
        if any(_SCALAR_TYPES[t](parsed) for t in types if t in _SCALAR_TYPES):
            return parsed
        return value
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            out[key] = item if sub is None else coerce_to_schema(item, sub, root)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [coerce_to_schema(item, schema["items"], root) for item in value]
    return value


def experiment_schema_path(experiment: str, root: str | Path | None = None) -> Path:
    """The schema of ``experiment``'s config section: ``config.schema.yaml`` in its own folder,
    ``src/ffsolve/experiments/<experiment>/`` under the checkout ``root``, or (None) in the
    installed package ``ffsolve.experiments``."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {list(EXPERIMENTS)}")
    if root is None:
        import ffsolve.experiments

        folder = Path(ffsolve.experiments.__file__).resolve().parent
    else:
        folder = Path(root) / "src" / "ffsolve" / "experiments"
    return folder / experiment / EXPERIMENT_SCHEMA


def config_schema(top: Mapping, root: str | Path | None = None) -> dict:
    """The whole config's schema: ``top`` (``workflow/schemas/config.schema.yaml``, which names no
    experiment) with one ``type: object`` entry per experiment of
    :data:`ffsolve.experiments.EXPERIMENTS`, and ``additionalProperties: false``, so a top-level key
    that is neither a shared setting nor an experiment is refused by name. Each entry checks only
    that the section is a mapping; its keys are checked against :func:`experiment_schema_path`'s
    file (``workflow/rules/common.smk``)."""
    schema = copy.deepcopy(dict(top))
    properties = schema.setdefault("properties", {})
    for name in EXPERIMENTS:
        if name in properties:
            raise ValueError(f"the top-level config schema names the experiment {name!r}: its section "
                             f"is described by {experiment_schema_path(name, root)} alone")
        properties[name] = {
            "type": "object",
            "description": f"The {name} experiment; keys in src/ffsolve/experiments/{name}/{EXPERIMENT_SCHEMA}.",
        }
    schema["additionalProperties"] = False
    return schema


def override_schema(section_schema: Mapping) -> dict:
    """The schema of one ``per_dataset`` entry: the section's settings, nothing required, no layout keys."""
    schema = _strip(copy.deepcopy(dict(section_schema)))
    schema["properties"] = {
        key: sub for key, sub in schema.get("properties", {}).items() if key not in SHARED_ONLY
    }
    schema["additionalProperties"] = False
    schema["type"] = "object"
    return schema


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("default", "required")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """``base`` with ``override`` merged in, mapping by mapping (lists and scalars replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merged_config(configfile=None, root=".") -> dict:
    """A config file as the workflow sees it before validation: ``config/config.yaml`` (which sets
    every key; the schemas hold no defaults) with ``configfile`` merged over it, as Snakemake
    merges a ``--configfile`` over the Snakefile's. None: config/config.yaml alone."""
    base = yaml.safe_load((Path(root) / "config" / "config.yaml").read_text())
    if configfile is None:
        return base
    path = Path(configfile) if Path(configfile).is_absolute() else Path(root) / configfile
    return deep_merge(base, yaml.safe_load(path.read_text()) or {})


def dataset_settings(section: Mapping, dataset: str) -> dict:
    """The settings one dataset's jobs run with: shared settings, then ``per_dataset.<dataset>``."""
    shared = {k: v for k, v in section.items() if k not in LAYOUT_KEYS}
    return canonical(deep_merge(shared, (section.get("per_dataset") or {}).get(dataset) or {}))


def canonical(value: Any) -> Any:
    """Sorted keys at every level: params built from the config then compare equal whatever order
    a config file lists its keys in (Snakemake compares params as text)."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value
