"""The distillation section of the leaderboard: teacher, student alone and distilled student, seed by seed.

Built from records whose details name a teacher (`teacher_accuracy`), so the harness needs no method names.
The student-alone accuracy of each record is its `reference.accuracy`: the same student, seed and budget.
"""

from __future__ import annotations

import statistics
from typing import Any

from tabulate import tabulate

from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.report.stats import mean_std, short_params
from slimbench.harness.run.records import RunRecord

TITLE = "## Distillation against the student alone"


def distillation_rows(rows: list[LeaderboardRow], records: list[RunRecord]) -> list[dict[str, Any]]:
    """Per leaderboard row with a teacher: the three accuracies, the paired gain and Hinton's ordering."""
    by_id = {r.run_id: r for r in records}
    out = []
    for row in rows:
        recs = [by_id[i] for i in row.run_ids.split() if i in by_id]
        recs = [r for r in recs if isinstance(r.details.get("teacher_accuracy"), (int, float))]
        if not recs:
            continue
        teacher = statistics.fmean(r.details["teacher_accuracy"] for r in recs)
        students = [(r.metrics.accuracy, r.reference.accuracy) for r in recs if r.metrics and r.reference]
        alone, alone_sd = mean_std([ref for _, ref in students])
        distilled, distilled_sd = mean_std([acc for acc, _ in students])
        gain, gain_sd = mean_std([acc - ref for acc, ref in students])
        val = [r.details["val_acc"] - r.details["student_alone_val_acc"] for r in recs
               if isinstance(r.details.get("val_acc"), (int, float))
               and isinstance(r.details.get("student_alone_val_acc"), (int, float))]
        out.append({
            "task": row.task, "model": row.model, "method": row.method, "params_json": row.params_json,
            "seeds": len(recs), "teacher": teacher, "alone": alone, "alone_sd": alone_sd, "distilled": distilled,
            "distilled_sd": distilled_sd, "gain": gain, "gain_sd": gain_sd,
            "val_gain": statistics.fmean(val) if val else None,
            "above_sd": gain > max(alone_sd, distilled_sd) if len(recs) > 1 else None,   # no spread from one seed
            "ordering": teacher >= distilled > alone,
        })
    return out


def distillation_markdown(rows: list[LeaderboardRow], records: list[RunRecord]) -> list[str]:
    """Markdown lines for the section (empty when no record has a teacher)."""
    table_rows = distillation_rows(rows, records)
    if not table_rows:
        return []

    table = [[
        r["task"], r["model"], r["method"], short_params(r["params_json"]), r["seeds"], f"{r['teacher']:.4f}",
        f"{r['alone']:.4f} ± {r['alone_sd']:.4f}", f"{r['distilled']:.4f} ± {r['distilled_sd']:.4f}",
        f"{100 * r['gain']:+.2f} ± {100 * r['gain_sd']:.2f}",
        "—" if r["val_gain"] is None else f"{100 * r['val_gain']:+.2f}",
        {True: "yes", False: "no", None: "—"}[r["above_sd"]], "yes" if r["ordering"] else "no",
    ] for r in table_rows]
    headers = ["task", "model", "method", "params", "seeds", "teacher acc", "student alone", "distilled",
               "gain (pts, paired)", "val gain (pts)", "gain > 1 std", "teacher ≥ distilled > alone"]
    return [
        TITLE, "",
        "Test accuracy, mean ± std over seeds. 'Student alone' is the same student trained with the same budget "
        "and seed (its baseline cell); the gain is paired seed by seed. 'gain > 1 std' asks whether the mean gain "
        "exceeds the larger seed-to-seed std of the two students; the last column checks Hinton et al.'s ordering "
        "on the means. 'val gain' is the same comparison on the validation split, the one to tune T and α on.",
        "", tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), "",
    ]
