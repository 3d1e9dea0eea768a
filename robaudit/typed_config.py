"""Build frozen dataclasses from plain mappings, rejecting unknown keys with their path.

Used for the audit config and for every stage's ``Params``: a typo such as
``stages[1].params.epz`` is an error naming that path and the known keys.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from robaudit.errors import ConfigError

T = TypeVar("T")


def build(cls: type[T], data: Mapping[str, Any] | None, path: str) -> T:
    """``cls(**data)`` with type coercion and unknown-key detection."""
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(sorted(fields))}", _join(path, key))
    hints = get_type_hints(cls)
    kwargs = {name: coerce(hints[name], value, _join(path, name)) for name, value in data.items()}
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key {missing[0]!r}", _join(path, missing[0]))
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.path:
            raise
        raise ConfigError(str(err), path) from err
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err), path) from err


def coerce(tp: Any, value: Any, path: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"expected {_name(tp)}, got {value!r}", path)
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"expected one of {list(get_args(tp))}, got {value!r}", path)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", path)
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"expected {len(args)} values, got {len(value)}", path)
            items = [coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_tp = args[0] if args else Any
            items = [coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table/mapping, got {value!r}", path)
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"expected one of {[m.value for m in tp]}, got {value!r}", path) from None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table/mapping, got {value!r}", path)
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"expected an integer, got {value!r}", path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", path)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", path)
        return value
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")
