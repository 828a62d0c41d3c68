"""Typed settings from the plain mappings Snakemake passes as ``params``.

Experiment entry points take dataclasses, not the config: ``settings_from(TrainSettings,
params["train"], "made.train")`` builds one, recursing into nested dataclass fields, and refuses a
missing or unknown key, or a value of the wrong type, with a message that names the config key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names the key."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the settings; the message names the
    file and the key to change. Every experiment's ``load_checkpoint`` raises it."""


def settings_from(cls: type[T], mapping: Mapping[str, Any], key: str) -> T:
    """An instance of the dataclass ``cls`` from ``mapping``; ``key`` is its config path."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(mapping, Mapping):
        raise SettingsError(f"config key '{key}' must be a mapping, got {type(mapping).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise SettingsError(
            f"config key '{key}' has unknown settings {unknown}; expected some of {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        path = f"{key}.{name}"
        if name not in mapping:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SettingsError(f"config key '{path}' is missing")
            continue
        values[name] = _convert(hints[name], mapping[name], path)
    return cls(**values)


def _convert(hint, value, path: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return settings_from(hint, value, path)
    if origin is typing.Union or origin is types.UnionType:  # Optional[int] and int | None
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except SettingsError as err:
                errors.append(str(err))
        raise SettingsError(errors[0] if len(errors) == 1 else f"config key '{path}': {value!r} fits none of {args}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"config key '{path}' must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise SettingsError(f"config key '{path}' must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"config key '{path}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"config key '{path}' must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"config key '{path}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"config key '{path}' must be a string, got {value!r}")
        return value
    return value
