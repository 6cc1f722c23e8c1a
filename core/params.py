"""Turn a YAML mapping into a typed dataclass, rejecting unknown or mistyped fields by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from slimbench.core.errors import ConfigError

D = TypeVar("D")


def build_dataclass(cls: type[D], values: Mapping[str, Any] | None, where: str) -> D:
    """Instantiate `cls` from `values`; `where` names the thing in errors ("method 'prune.magnitude'")."""
    values = dict(values or {})
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: parameters must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; valid parameters: {describe_fields(cls)}"
        )
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}: parameter {key!r}", cls)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; valid parameters: {describe_fields(cls)}") from None


def describe_fields(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    parts = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required"
        )
        parts.append(f"{f.name}: {_type_name(hints[f.name])} = {default!r}")
    return "; ".join(parts) if parts else "(none)"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, cls: type) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, cls)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}; valid parameters: {describe_fields(cls)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}; valid parameters: {describe_fields(cls)}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where, cls) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}; valid parameters: {describe_fields(cls)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}; valid parameters: {describe_fields(cls)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}; valid parameters: {describe_fields(cls)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}; valid parameters: {describe_fields(cls)}")
        return value
    return value


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
