"""JSON object -> validated dataclass, with errors that name the JSON key path (``a.b.c[2]``).

``from_mapping(cls, data, path)`` checks types against the dataclass annotations (bool, int, float, str, Literal,
lists, dicts, unions, nested dataclasses), rejects unknown and missing keys, and prefixes the ``ConfigKeyError``
raised by a dataclass's own ``__post_init__`` with the path it was parsed at. Used by ``data_efficiency.config``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

__all__ = ["ConfigKeyError", "require", "from_mapping"]


class ConfigKeyError(ValueError):
    """A config error tied to a key path; parents prefix their own path when they re-raise it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def under(self, prefix: str) -> ConfigKeyError:
        """The same error with ``prefix.`` in front of its key."""
        return ConfigKeyError(f"{prefix}.{self.key}" if prefix else self.key, self.message)


def require(cond: bool, key: str, message: str) -> None:
    """Raise ``ConfigKeyError(key, message)`` unless ``cond``."""
    if not cond:
        raise ConfigKeyError(key, message)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check/convert one JSON value against a type annotation; ConfigKeyError names ``key``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigKeyError as e:
                errors.append(e.message)
        raise ConfigKeyError(key, "; or ".join(errors))
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigKeyError(key, f"{value!r} is not one of {list(choices)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigKeyError(key, f"expected a list, got {type(value).__name__} {value!r}")
        (elem,) = get_args(tp)
        return [_convert(elem, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigKeyError(key, f"expected an object, got {type(value).__name__} {value!r}")
        _, elem = get_args(tp)
        return {str(k): _convert(elem, v, f"{key}.{k}") for k, v in value.items()}
    return _convert_scalar(tp, value, key)


def _convert_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigKeyError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigKeyError(key, f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                raise ConfigKeyError(key, f"expected an integer, got {value!r}")
            value = int(value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigKeyError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigKeyError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"internal: unsupported annotation {_type_name(tp)} for {key}")


def from_mapping(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from a JSON object; unknown or missing keys and bad values name ``path.key``."""
    if not isinstance(data, Mapping):
        raise ConfigKeyError(path, f"expected an object, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigKeyError(f"{path}.{unknown[0]}" if path else unknown[0],
                             f"unknown key; known keys here: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigKeyError(key, "required key is missing")
    try:
        return cls(**kwargs)
    except ConfigKeyError as e:
        raise e.under(path) from None


