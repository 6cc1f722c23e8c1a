"""Turn a YAML mapping into a typed dataclass, rejecting unknown or mistyped fields by name."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from slimbench.core.errors import ConfigError

D = TypeVar("D")


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field; every float must also be finite (NaN and inf are never a budget)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        low = f"≥ {self.ge:g}" if self.ge is not None else (f"> {self.gt:g}" if self.gt is not None else "")
        high = f"≤ {self.le:g}" if self.le is not None else (f"< {self.lt:g}" if self.lt is not None else "")
        return " and ".join(p for p in (low, high) if p) or "any finite number"


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field whose range is checked when the suite is parsed, before anything runs."""
    return dataclasses.field(default=default, metadata={"range": Range(ge, gt, le, lt)})


def added(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None) -> Any:
    """A parameter added after results exist, whose default keeps the method's earlier behaviour.

    At its default it is left out of the resolved parameters (`resolved_params`), so of every run_id: adding a
    knob does not expire the finished cells it cannot change. Set to anything else, it is recorded like any field.
    """
    return dataclasses.field(default=default, metadata={"range": Range(ge, gt, le, lt), "omit_at_default": True})


def resolved_params(obj: Any) -> dict[str, Any]:
    """Every parameter of a built dataclass, defaults included (so records say what ran), but `added` ones at
    their default."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init
            and not (f.metadata.get("omit_at_default") and getattr(obj, f.name) == f.default)}


def check_ranges(obj: Any, where: str) -> None:
    """Every numeric field finite and inside its declared `bounded` range; one ConfigError naming field and value."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}: {f.name} must be a finite number, got {v!r}")
            allowed = _declared_range(type(obj), f.name)
            if allowed is not None and not allowed.allows(v):
                raise ConfigError(f"{where}: {f.name} must be {allowed}, got {v!r}")


def _declared_range(cls: type, name: str) -> Range | None:
    """The field's range, or the one a base class declared (a subclass that only changes the default keeps it)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "range" in f.metadata:
            return f.metadata["range"]
    return None


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; every user writes learning rates that way."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """YAML with YAML 1.2 numbers: `1e-3`, `5E-4` and `1e+6` are numbers."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


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
        obj = cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; valid parameters: {describe_fields(cls)}") from None
    check_ranges(obj, where)
    return obj


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

