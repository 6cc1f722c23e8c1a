"""Reading configs/claims.yaml: the shipped file (importlib.resources) or one given, each entry validated, every
suite it names a shipped one, every id used once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimbench.core.errors import ConfigError
from slimbench.core.params import build_dataclass, load_yaml
from slimbench.harness.replicate.claim_schema import Claim


def shipped_suite_names() -> set[str]:
    folder = resources.files("slimbench.configs")
    return {p.name.removesuffix(".yaml") for p in folder.iterdir()
            if p.name.endswith(".yaml") and p.name != "claims.yaml"}


def parse_claims(raw: Any, where: str) -> list[Claim]:
    """Validated claims from the YAML document; every error names the claim and what is wrong with it."""
    entries = (raw or {}).get("claims") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a top-level `claims:` list")
    suites = shipped_suite_names()
    claims: list[Claim] = []
    for i, entry in enumerate(entries):
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"{where}: claim {name!r}" if name else f"{where}: claim #{i + 1}"
        claim = build_dataclass(Claim, entry, label)
        unknown = [s for s in claim.suites if s not in suites]
        if unknown:
            raise ConfigError(f"{label}: unknown suite(s) {', '.join(unknown)}; shipped: {', '.join(sorted(suites))}")
        if any(c.id == claim.id for c in claims):
            raise ConfigError(f"{label}: id is used twice")
        claims.append(claim)
    return claims


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims registry: shipped with the package (importlib.resources), or a file given explicitly."""
    source = path if path is not None else resources.files("slimbench.configs") / "claims.yaml"
    where = f"claims file {path or 'configs/claims.yaml'}"
    if not source.is_file():
        raise ConfigError(f"claims file {source} does not exist")
    try:
        raw = load_yaml(source.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    return parse_claims(raw, where)
