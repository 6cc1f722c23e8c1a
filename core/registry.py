"""Name → factory registries (one per kind of thing), in the style of timm's `register_model`."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from slimbench.core import plugins
from slimbench.core.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class DuplicateNameError(ConfigError):
    """Two registrations under one name (e.g. a plugin reusing a built-in name)."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    version: int = 1              # part of every run_id and cache key: bump it and the results expire

    @property
    def source(self) -> dict[str, Any]:
        """Where the registered code lives: slimbench itself, or a plugin with its version or hash."""
        plugin = plugins.source_of(getattr(self.obj, "__module__", "") or "")
        return plugin.to_dict() if plugin else {"module": getattr(self.obj, "__module__", "?"), "kind": "builtin"}


class Registry(Generic[T]):
    """A flat namespace of registered objects; names are unique and looked up exactly."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str | None = None, version: int | None = None) -> Callable[[T], T]:
        """Decorator; `version` (or the object's `version` attribute) expires results when behaviour changes."""
        def decorator(obj: T) -> T:
            if name in self._entries:
                prev = self._entries[name].obj
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered by {_origin(prev)}; "
                    f"cannot register {_origin(obj)} under the same name"
                )
            doc = description or (inspect.getdoc(obj) or "").strip().splitlines()
            desc = doc if isinstance(doc, str) else (doc[0] if doc else "")
            ver = version if version is not None else getattr(obj, "version", 1)
            if isinstance(ver, bool) or not isinstance(ver, int) or ver < 1:
                raise ConfigError(f"{self.kind} {name!r}: version must be a positive integer, got {ver!r}")
            self._entries[name] = Entry(name, obj, desc, ver)
            return obj

        return decorator

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self, pattern: str = "*") -> list[Entry[T]]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def unregister(self, name: str) -> None:
        """For tests that register throw-away entries."""
        self._entries.pop(name, None)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _origin(obj: Any) -> str:
    plugin = plugins.source_of(getattr(obj, "__module__", "") or "")
    return f"{_qualname(obj)} ({plugin.describe() if plugin else 'slimbench'})"


def params_type(obj: Any) -> type | None:
    """The dataclass that validates an entry's parameters: the class itself, or a factory's `params` hint."""
    import dataclasses
    import typing

    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        return obj
    hints = typing.get_type_hints(obj) if callable(obj) else {}
    tp = hints.get("params")
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def parse_params(registry: Registry[Any], name: str, values: dict[str, Any] | None) -> Any:
    """Validate `values` against the entry's dataclass; raises one ConfigError naming the valid fields."""
    from slimbench.core.errors import ConfigError
    from slimbench.core.params import build_dataclass

    obj = registry.get(name)
    cls = params_type(obj)
    if cls is None:
        if values:
            raise ConfigError(f"{registry.kind} {name!r} takes no parameters, got {sorted(values)}")
        return None
    return build_dataclass(cls, values, f"{registry.kind} {name!r}")
