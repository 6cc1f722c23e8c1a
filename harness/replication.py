"""Published claims beside our measured values, with a verdict (configs/claims.yaml → replication.md)."""

from __future__ import annotations

import fnmatch
import json
import operator
import re
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tabulate import tabulate

from slimbench.core.errors import ConfigError
from slimbench.core.params import build_dataclass, load_yaml
from slimbench.harness.records import RunRecord

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass
class Claim:
    id: str
    paper: str
    claim: str
    paper_value: str
    measure: str                      # a leaderboard column, `delta_accuracy_pts`, `details.<key>`, or `arch.params`/`arch.macs`
    expect: str                       # e.g. ">= -1.0"
    where: dict[str, Any] = field(default_factory=dict)   # method / model / task globs, params subset
    arch: dict[str, Any] = field(default_factory=dict)    # for arch.*: {model, channels, height, width, classes}

    def check(self, value: float) -> bool:
        match = re.fullmatch(r"\s*(>=|<=|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*", self.expect)
        if not match:
            raise ConfigError(f"claim {self.id}: expect must look like '>= 1.5', got {self.expect!r}")
        return OPS[match.group(1)](value, float(match.group(2)))


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims table: shipped with the package (importlib.resources), or a file given explicitly."""
    source = path if path is not None else resources.files("slimbench.configs") / "claims.yaml"
    if not source.is_file():
        raise ConfigError(f"claims file {source} does not exist")
    raw = load_yaml(source.read_text()) or {}
    return [build_dataclass(Claim, c, f"claims file {path}") for c in raw.get("claims", [])]


def _matches(claim: Claim, row: dict[str, Any]) -> bool:
    where = dict(claim.where)
    params = where.pop("params", {})
    if any(not fnmatch.fnmatchcase(str(row[k]), str(v)) for k, v in where.items()):
        return False
    row_params = json.loads(row["params_json"])
    return all(row_params.get(k) == v for k, v in params.items())


def _value(claim: Claim, row: dict[str, Any], records: dict[str, RunRecord]) -> float | None:
    if claim.measure == "delta_accuracy_pts":
        return 100 * row["delta_accuracy"]
    if claim.measure.startswith("details."):
        key = claim.measure.removeprefix("details.")
        vals = [records[r].details.get(key) for r in row["run_ids"].split() if r in records]
        vals = [v for v in vals if isinstance(v, (int, float))]
        return statistics.fmean(vals) if vals else None
    value = row.get(claim.measure)
    return float(value) if isinstance(value, (int, float)) else None


def _arch_value(claim: Claim) -> float:
    """Architecture claims are measured now, on the model built at the paper's configuration."""
    import torch

    from slimbench.baselines import build_model
    from slimbench.deploy.counting import count_macs, count_params
    from slimbench.tasks import InputSpec

    a = claim.arch
    model = build_model(a["model"], InputSpec(a.get("channels", 3), a.get("height", 224), a.get("width", 224)),
                        a.get("classes", 1000), a.get("params"))
    if claim.measure == "arch.params":
        return float(count_params(model)[0])
    return float(count_macs(model, torch.zeros(1, a.get("channels", 3), a.get("height", 224), a.get("width", 224))))


def replication_rows(claims: list[Claim], rows: list[dict[str, Any]], records: list[RunRecord]) -> list[list[Any]]:
    by_id = {r.run_id: r for r in records}
    out = []
    for claim in claims:
        if claim.measure.startswith("arch."):
            value = _arch_value(claim)
            shown = f"{value / 1e6:,.3f} M" if claim.measure == "arch.macs" else f"{value:,.0f}"
            out.append([claim.paper, claim.claim, claim.paper_value, f"{claim.arch['model']} @ 224²", shown,
                        "holds" if claim.check(value) else "does not hold"])
            continue
        hits = [r for r in rows if _matches(claim, r)]
        if not hits:
            out.append([claim.paper, claim.claim, claim.paper_value, "—", "not measured in this suite", "not measured"])
        for row in hits:
            value = _value(claim, row, by_id)
            where = f"{row['task']} · {row['model']} · {row['method']} (seeds {row['seeds']})"
            if value is None:
                out.append([claim.paper, claim.claim, claim.paper_value, where, "missing in records", "not measured"])
            else:
                out.append([claim.paper, claim.claim, claim.paper_value, where, f"{value:.3f} ({claim.measure})",
                            "holds" if claim.check(value) else "does not hold"])
    return out


def replication_markdown(claims: list[Claim], rows: list[dict[str, Any]], records: list[RunRecord]) -> str:
    table = replication_rows(claims, rows, records)
    headers = ["paper", "claim", "paper value", "where measured", "our value", "verdict"]
    return "\n".join([
        "# Replication: published claims beside our measurements", "",
        "Each verdict compares a value measured by this suite (from its run records, or from the model built at the "
        "paper's configuration for architecture claims) with the claim's threshold in `configs/claims.yaml`. "
        "Our budgets are far smaller than the papers': read a failed verdict as 'not reproduced at this budget'.", "",
        tabulate(table, headers=headers, tablefmt="github"), "",
    ])
