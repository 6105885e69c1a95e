"""Frozen dataclass configurations that round-trip to JSON, plus `key=value` overrides.

Every model and every training run is described by one frozen dataclass deriving from `Config`.
Named presets are plain dicts of such configs (`PRESETS = {"tiny": ..., "small": ...}`) next to the model.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Self, TypeVar


class ConfigError(ValueError):
    """A configuration value, field or preset that is not what was expected."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Converts a JSON value (or a string from the command line) to `annotation`, or raises ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{where}: {value!r} matches none of {annotation}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [item for item in value.split(",") if item.strip()] if value.strip() else []
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(item, arg, f"{where}[{i}]") for i, (arg, item) in enumerate(zip(args, value)))
        item_type = args[0] if args else Any
        converted = [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if isinstance(annotation, type) and issubclass(annotation, Config):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object for {annotation.__name__}, got {value!r}")
        return annotation.from_dict(value, where=where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of every configuration. Subclasses are `@dataclass(frozen=True)` with typed fields."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [item.to_dict() if isinstance(item, Config) else item for item in value]
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> Self:
        """Builds the config from a dict; unknown or ill-typed fields raise ConfigError naming them."""
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(names)}")
        hints = _field_types(cls)
        values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"{where}: {error}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str | None = None) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where or cls.__name__}: not valid JSON ({error})") from None
        return cls.from_dict(data, where=where)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return cls.from_json(path.read_text(), where=str(path))

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Self:
        """Applies `["key=value", "sub.key=value"]` (from `--set`) or a dict of dotted keys."""
        if isinstance(overrides, list):
            pairs = {}
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override {item!r}: expected key=value")
                key, value = item.split("=", 1)
                pairs[key.strip()] = _parse_literal(value.strip())
            overrides = pairs
        data = self.to_dict()
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"override {key!r}: {part!r} is not a nested config of {type(self).__name__}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(
                    f"override {key!r}: {type(self).__name__} has no field {parts[-1]!r}; fields: {sorted(node)}"
                )
            node[parts[-1]] = value
        return type(self).from_dict(data)


def _parse_literal(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, lists, true/false/null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


ConfigT = TypeVar("ConfigT", bound=Config)


def pick_preset(presets: dict[str, ConfigT], name: str, what: str) -> ConfigT:
    """Returns `presets[name]` or raises a ConfigError that lists the available names."""
    if name not in presets:
        raise ConfigError(f"unknown {what} preset {name!r}; available: {', '.join(presets)}")
    return presets[name]
