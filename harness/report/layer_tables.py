"""Tables methods add to their suite's report (`Method.report_tables`), printed under the leaderboard: a method
declares what its records hold and how to show it (e.g. what mixed precision chose for each layer), so a new
method's section needs no edit here. One table per task, model and parameter setting, from the lowest seed's
record."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tabulate import tabulate

from slimbench.harness.run.records import RunRecord

if TYPE_CHECKING:
    from slimbench.methods.base import ReportTable


def _first_seed(records: list[RunRecord], method: str, table: ReportTable) -> list[RunRecord]:
    chosen: dict[tuple[str, str, str], RunRecord] = {}
    for rec in sorted(records, key=lambda r: r.seed):
        if rec.status == "ok" and rec.method == method and table.rows(rec.details):
            key = (rec.task, rec.model, json.dumps(rec.details.get("params_given", {}), sort_keys=True))
            chosen.setdefault(key, rec)
    return [chosen[k] for k in sorted(chosen)]


def markdown(records: list[RunRecord]) -> list[str]:
    """Every registered method's tables, for the methods that have records holding them (methods by name)."""
    from slimbench.methods import METHODS

    lines: list[str] = []
    for method in sorted({rec.method for rec in records} & set(METHODS.names())):
        for table in METHODS.get(method).report_tables:
            chosen = _first_seed(records, method, table)
            if not chosen:
                continue
            lines += [f"## {table.title}", "", table.intro, ""]
            for rec in chosen:
                given = ", ".join(f"{k}={v}" for k, v in rec.details.get("params_given", {}).items())
                lines += [f"### {rec.task} · {rec.model} · {method} ({given}), seed {rec.seed}", ""]
                if table.summary is not None:
                    # the methods room reads records as plain mappings (it may not import the harness's types)
                    lines += [table.summary(rec.details, rec.metrics.to_dict() if rec.metrics else {}), ""]
                lines += [tabulate(table.rows(rec.details), headers=list(table.headers), tablefmt="github"), ""]
    return lines
