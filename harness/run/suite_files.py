"""Suite files on disk: finding one by name or path, and `extends:` (a suite written as its differences from bases).

`extends: base` or `extends: [base, other]` names base files, each a shipped file's name (`configs/<name>.yaml`) or
a path relative to the extending file (a file there wins over a shipped one of the same name). The bases are merged
in order, then the file itself on top, by these rules:

- mappings merge key by key (`train: {epochs: 5}` changes the base's epochs and keeps the rest of its budget),
  except a mapping that sets `name:` (an entry such as the teacher): it replaces the base's as a whole, because one
  entry's params mean nothing to another;
- lists and scalars replace (`methods:`, `tasks:`, `exclude: []`: a list is never appended to);
- `suite:` and `description:` belong to the file that sets them: a suite extending another is another experiment,
  so it never inherits its results folder.

A base may extend further bases; a cycle, or a name that is neither next to the file nor shipped, is a ConfigError.
A file without `methods:` once merged is a base, not a suite: it is not listed among the shipped suites and does not
run. Paths in `imports:` are read relative to the suite file that is loaded, wherever the key was written.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from slimbench.core.errors import ConfigError
from slimbench.core.params import load_yaml

OWN_KEYS = ("suite", "description")   # never inherited


def shipped_files() -> dict[str, Any]:
    """Every suite or base file shipped inside the package, by name (`claims.yaml` is not one)."""
    folder = resources.files("slimbench.configs")
    return {p.name.removesuffix(".yaml"): p for p in folder.iterdir()
            if p.name.endswith(".yaml") and p.name != "claims.yaml"}


def packaged_suites() -> dict[str, Any]:
    """The shipped files that run (`slimbench run quick` works from any directory); bases are left out."""
    out = {}
    for name, source in shipped_files().items():
        try:
            if is_base(read_suite_file(source)):
                continue
        except ConfigError:   # a broken shipped suite stays listed, so running it shows its error
            pass
        out[name] = source
    return out


def is_base(raw: dict[str, Any]) -> bool:
    """A merged suite file without `methods:` only gives settings to the suites that extend it."""
    return "methods" not in raw


def resolve_suite_path(spec: str | Path) -> Any:
    """A suite file path, or the name of a shipped suite (`quick`, `configs/quick.yaml`)."""
    path = Path(spec)
    if path.is_file():
        return path
    if (found := _shipped(path)) is not None:
        return found
    raise ConfigError(f"suite file {spec} does not exist; shipped suites: "
                      f"{', '.join(sorted(packaged_suites())) or '(none)'} (give a name or a path to a .yaml file)")


def read_suite_file(source: Any, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The file's mapping with its `extends:` bases merged in (`chain`: the files extending it, to find cycles)."""
    where = f"suite file {source}"
    try:
        raw = load_yaml(source.read_text())
    except Exception as exc:   # yaml.YAMLError, or an unreadable file
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    chain = (*chain, _key(source))
    specs = raw.pop("extends", None)
    if specs is None:
        return raw
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, list) or not specs or not all(isinstance(s, str) and s for s in specs):
        raise ConfigError(f"{where}: `extends:` must name a base file or a list of them, got {specs!r}")
    merged: dict[str, Any] = {}
    for spec in specs:
        base = _find_base(spec, source, where)
        if _key(base) in chain:
            cycle = " -> ".join(Path(k).name for k in [*chain[chain.index(_key(base)):], _key(base)])
            raise ConfigError(f"{where}: `extends: {spec}` is a cycle ({cycle}); a base cannot extend its suite")
        merged = merge(merged, read_suite_file(base, chain))
    return merge({k: v for k, v in merged.items() if k not in OWN_KEYS}, raw)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base` by the module's rules (neither is changed)."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        named = isinstance(value, dict) and "name" in value
        out[key] = merge(old, value) if isinstance(old, dict) and isinstance(value, dict) and not named else value
    return out


def _shipped(path: Path) -> Any:
    """The shipped file a bare name or `configs/<name>.yaml` means, or None."""
    name = path.name.removesuffix(".yaml")
    shipped = shipped_files()
    if name in shipped and (path.parent == Path(".") or path.parent.name == "configs"):
        return shipped[name]
    return None


def _key(source: Any) -> str:
    """One name per file however it was reached (relative path, absolute path, shipped resource)."""
    return str(Path(source).resolve()) if isinstance(source, Path) else str(source)


def _find_base(spec: str, source: Any, where: str) -> Any:
    """Next to the extending file first (a name or a relative path, `.yaml` optional), then a shipped file."""
    path = Path(spec)
    folder = Path(source).parent if isinstance(source, Path) else None
    if folder is not None:
        for candidate in (folder / path, folder / f"{spec}.yaml"):
            if candidate.is_file():
                return candidate
    if (found := _shipped(path)) is not None:
        return found
    near = f"no {folder / path} and " if folder is not None else ""
    raise ConfigError(f"{where}: `extends: {spec}` names no file ({near}no shipped file of that name); shipped: "
                      f"{', '.join(sorted(shipped_files()))}, or a path relative to the suite file")
