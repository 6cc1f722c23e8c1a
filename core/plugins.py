"""Plugins from outside the repository: entry points, modules and files that register methods, tasks or models.

A user's own package registers through the `slimbench.plugins` entry-point group (loaded once, before any
suite is read); a module name or a `.py` file can also be named with `--import` or a suite's `imports:`.
Each loaded plugin is remembered with where it came from (distribution and version, or file and sha256) so
every record names exactly the code that produced it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from slimbench.core.errors import ConfigError

ENTRY_POINT_GROUP = "slimbench.plugins"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin module came from: enough to tell two versions of the same plugin apart."""

    module: str
    kind: str                     # "entry-point" | "module" | "file"
    origin: str                   # entry point name, module name or file path
    version: str | None = None    # the distribution's version (entry points, installed modules)
    sha256: str | None = None     # the file's hash (files, and modules outside any distribution)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        tag = f"=={self.version}" if self.version else (f" sha256:{self.sha256[:12]}" if self.sha256 else "")
        return f"plugin {self.kind} {self.origin}{tag}"


_LOADED: dict[str, PluginSource] = {}     # module name -> source
_ENTRY_POINTS_DONE = False


def loaded() -> dict[str, PluginSource]:
    return dict(_LOADED)


def source_of(module_name: str) -> PluginSource | None:
    """The plugin that defined `module_name` (or a module inside it), None for slimbench's own code."""
    parts = module_name.split(".")
    for i in range(len(parts), 0, -1):
        hit = _LOADED.get(".".join(parts[:i]))
        if hit is not None:
            return hit
    return None


def load_entry_points() -> list[PluginSource]:
    """Import every `slimbench.plugins` entry point once (idempotent)."""
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE:
        return [s for s in _LOADED.values() if s.kind == "entry-point"]
    _ENTRY_POINTS_DONE = True
    out = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        module_name = ep.value.split(":", 1)[0].strip()
        version = ep.dist.version if ep.dist is not None else None
        name = f"{ep.dist.name}:{ep.name}" if ep.dist is not None else ep.name
        source = PluginSource(module_name, "entry-point", name, version=version)
        _LOADED.setdefault(module_name, source)
        try:
            ep.load()
        except ConfigError:
            raise
        except Exception as exc:
            _LOADED.pop(module_name, None)
            raise ConfigError(f"{source.describe()} failed to import: {exc.__class__.__name__}: {exc}") from None
        out.append(source)
    return out


def import_plugin(spec: str, base: Path | None = None) -> PluginSource:
    """Import a module by name, or a `.py` file by path (relative to `base`, e.g. the suite file's folder)."""
    looks_like_file = spec.endswith(".py") or "/" in spec or "\\" in spec
    if looks_like_file:
        path = Path(spec).expanduser()
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        return _import_file(path.resolve())
    if spec in _LOADED:
        return _LOADED[spec]
    source = PluginSource(spec, "module", spec, version=_distribution_version(spec))
    _LOADED[spec] = source
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        _LOADED.pop(spec, None)
        raise ConfigError(f"plugin module {spec!r} cannot be imported ({exc}); give an importable module name "
                          f"or the path of a .py file") from None
    except ConfigError:
        raise
    except Exception as exc:
        _LOADED.pop(spec, None)
        raise ConfigError(f"plugin module {spec!r} failed to import: {exc.__class__.__name__}: {exc}") from None
    module_file = getattr(module, "__file__", None)
    if source.version is None and module_file:
        source = PluginSource(spec, "module", spec, sha256=_sha256(Path(module_file)))
        _LOADED[spec] = source
    return source


def _import_file(path: Path) -> PluginSource:
    if not path.is_file():
        raise ConfigError(f"plugin file {path} does not exist")
    digest = _sha256(path)
    module_name = f"slimbench_plugin_{path.stem}_{digest[:8]}"
    if module_name in _LOADED:
        return _LOADED[module_name]
    source = PluginSource(module_name, "file", str(path), sha256=digest)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin file {path} is not an importable Python file")
    module: ModuleType = importlib.util.module_from_spec(spec)
    _LOADED[module_name] = source
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as exc:
        _LOADED.pop(module_name, None)
        sys.modules.pop(module_name, None)
        raise ConfigError(f"plugin file {path} failed to import: {exc.__class__.__name__}: {exc}") from None
    return source


def _distribution_version(module_name: str) -> str | None:
    top = module_name.split(".", 1)[0]
    dists = metadata.packages_distributions().get(top, [])
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
