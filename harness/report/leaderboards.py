"""The two other views of the same leaderboard rows: per method (how one method fares on every task × model) and
the method × task matrix (each method's best setting per task). Both come from `leaderboard_rows` only, so a figure
here is always a figure of the per-task table, and failed or n/a cells are listed, never dropped."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, TypeAlias

from tabulate import tabulate

from slimbench.harness.report.rows import FailedRow, LeaderboardRow, MatrixCell
from slimbench.harness.report.stats import short_params
from slimbench.harness.run.records import NOT_APPLICABLE, RunRecord, unmeasured_reason

MethodRow: TypeAlias = "LeaderboardRow | FailedRow"   # a row of the per-method table: finished or failed

BY_METHOD_COLUMNS = ["method", "params_json", "task", "model", "status", "seeds", "accuracy", "accuracy_std",
                     "delta_accuracy", "delta_accuracy_std", "delta_significant", "compression_x", "speedup_b1_x",
                     "speedup_bn_x", "storage", "compute", "claim_verified", "run_ids", "error"]
MATRIX_COLUMNS = ["method", "task", "model", "params_json", "seeds", "delta_accuracy", "delta_accuracy_std",
                  "delta_significant", "compression_x", "speedup_bn_x", "speedup_bn_low", "speedup_bn_high",
                  "settings_tried", "run_ids"]


def failed_rows(records: list[RunRecord]) -> list[FailedRow]:
    """A failed cell keeps its place in every table: task, model, method, params and the error it ended with."""
    out = []
    for rec in records:
        if rec.status == "ok":
            continue
        params = rec.config.get("method", {}).get("params", {})
        given = rec.details.get("params_given", params)
        out.append(FailedRow(task=rec.task, model=rec.model, method=rec.method, family=rec.family,
                             params_json=json.dumps(params, sort_keys=True), params_given=json.dumps(given),
                             seeds=str(rec.seed), status=rec.status,
                             error=unmeasured_reason(rec), run_ids=rec.run_id))
    return sorted(out, key=lambda r: (r.task, r.model, r.method, r.params_json, r.seeds))


def _csv(rows: list[LeaderboardRow] | list[MethodRow] | list[MatrixCell], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v))
                         for k, v in row.columns().items() if k in columns})
    return buf.getvalue()


def by_method_rows(rows: list[LeaderboardRow], failed: list[FailedRow]) -> list[MethodRow]:
    """Every (method, params) setting with one row per task × model it ran on, failed ones included."""
    out: list[MethodRow] = [*rows, *failed]
    return sorted(out, key=lambda r: (r.method, r.params_json, r.task, r.model, r.status))


def by_method_csv(rows: list[MethodRow]) -> str:
    return _csv(rows, BY_METHOD_COLUMNS)


def by_method_markdown(rows: list[MethodRow], delta_cell: Any, speedup_cell: Any, label_cell: Any) -> str:
    """One section per method setting; the cell renderers are the per-task table's own, so both read alike."""
    lines = ["# Leaderboard by method", "",
             "Each method setting across every task × model it ran on (from the same rows as `leaderboard.md`). "
             "Δ acc is against the same model's baseline on that task; failed cells are listed with their error.", ""]
    settings: dict[tuple[str, str], list[MethodRow]] = {}
    for row in rows:
        settings.setdefault((row.method, row.params_json), []).append(row)
    for (method, _), group in settings.items():
        given = short_params(group[0].params_given)
        lines += [f"## {method}" + (f" ({given})" if given else ""), ""]
        table = []
        for r in group:
            if isinstance(r, FailedRow):
                table.append([r.task, r.model, r.seeds, r.status, "", "", "", "", r.error])
                continue
            table.append([r.task, r.model, r.seeds, f"{r.accuracy:.4f} ± {r.accuracy_std:.4f}",
                          delta_cell(r), f"{r.compression_x:.2f}×",
                          speedup_cell(r.speedup_b1_x, r.speedup_b1_low, r.speedup_b1_high),
                          speedup_cell(r.speedup_bn_x, r.speedup_bn_low, r.speedup_bn_high), label_cell(r)])
        lines += [tabulate(table, headers=["task", "model", "seeds", "accuracy", "Δ acc (pts)", "compression",
                                           "speedup b1", "speedup bN", "storage / compute"], tablefmt="github"), ""]
    return "\n".join(lines)


def best_setting_key(row: LeaderboardRow) -> tuple[float, float, float]:
    """What "best setting" means in every view: the least accuracy lost, then more compression, then more speed."""
    return round(row.delta_accuracy, 6), row.compression_x, row.speedup_bn_x


def matrix_rows(rows: list[LeaderboardRow]) -> list[MatrixCell]:
    """Per method × task, the setting (model and params) that lost the least accuracy; ties go to more compression."""
    cells: dict[tuple[str, str], list[LeaderboardRow]] = {}
    for row in rows:
        if row.family != "baseline":
            cells.setdefault((row.method, row.task), []).append(row)
    out = []
    for (_method, _task), group in sorted(cells.items()):
        best = max(group, key=best_setting_key)
        out.append(MatrixCell(best, len(group)))
    return out


def matrix_csv(rows: list[MatrixCell]) -> str:
    return _csv(rows, MATRIX_COLUMNS)


def matrix_markdown(matrix: list[MatrixCell], failed: list[FailedRow], delta_cell: Any, speedup_cell: Any) -> str:
    tasks = sorted({c.row.task for c in matrix} | {f.task for f in failed if f.family != "baseline"})
    methods = sorted({c.row.method for c in matrix} | {f.method for f in failed if f.family != "baseline"})
    by_key = {(c.row.method, c.row.task): c for c in matrix}
    failed_keys = {(f.method, f.task) for f in failed if f.status != NOT_APPLICABLE}
    not_applicable: dict[tuple[str, str], dict[str, str]] = {}   # (method, task) -> model -> why it cannot apply
    for f in failed:
        if f.status == NOT_APPLICABLE:
            not_applicable.setdefault((f.method, f.task), {})[f.model] = f.error

    def why(key: tuple[str, str]) -> str:
        return "; ".join(f"{model}: {reason}" for model, reason in sorted(not_applicable[key].items()))
    table = []
    for method in methods:
        line = [method]
        for task in tasks:
            cell = by_key.get((method, task))
            if cell is None:
                line.append("failed" if (method, task) in failed_keys else
                            f"n/a ({why((method, task))})" if (method, task) in not_applicable else "—")
                continue
            r = cell.row
            given = short_params(r.params_given)
            line.append(f"Δ {delta_cell(r)} pts<br>{r.compression_x:.2f}× smaller<br>speed b{r.latency_batch} "
                        f"{speedup_cell(r.speedup_bn_x, r.speedup_bn_low, r.speedup_bn_high)}<br>"
                        f"{r.model}" + (f", {given}" if given else "")
                        + (f" (best of {cell.settings_tried})" if cell.settings_tried > 1 else "")
                        + ("<br>some cells failed" if (method, task) in failed_keys else "")
                        + (f"<br>n/a on {why((method, task))}" if (method, task) in not_applicable else ""))
        table.append(line)
    return "\n".join([
        "# Method × task matrix", "",
        "Each cell: the method's setting that lost the least accuracy on that task (Δ acc in points against the same "
        "model's baseline, with its seed note), its compression and its batch speedup in the deployed runtime "
        "(≈1.00× = inside the timing band), and which model and parameters that was. — = not run on that task; "
        "n/a (why) = the method cannot apply to that model's architecture.", "",
        tabulate(table, headers=["method", *tasks], tablefmt="github"), "",
    ])
