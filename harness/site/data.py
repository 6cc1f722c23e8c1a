"""What the site is built from, read once: every suite folder's records, its leaderboard rows and failed cells (the
report's own `leaderboard_rows` / `failed_rows`, so a figure on a page is a figure of `leaderboard.md`), its
reproduction table, and the replication lines evaluated on those same rows. Nothing here formats: tables.py does."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from slimbench.harness.replicate.evaluation import Line
from slimbench.harness.report.rows import FailedRow, LeaderboardRow
from slimbench.harness.run.records import NOT_APPLICABLE, RunRecord

COMPRESSES = 1.001   # a compression ratio above this is a setting that stores less than its reference


@dataclass
class SuiteView:
    """One results/<suite> folder: its records (by run_id), its rows, its failed and n/a cells and reproduction.md."""

    name: str
    records: dict[str, RunRecord]
    rows: list[LeaderboardRow]
    failed: list[FailedRow]             # status "failed" or "n/a" (the method cannot apply to the model)
    reproduction: str | None            # results/<suite>/reproduction.md, when a reproduction was run

    @property
    def broken(self) -> list[FailedRow]:
        """Cells that failed: a rerun retries them."""
        return [f for f in self.failed if f.status != NOT_APPLICABLE]

    @property
    def not_applicable(self) -> list[FailedRow]:
        """Cells whose method declared it cannot apply to the model: a rerun keeps them."""
        return [f for f in self.failed if f.status == NOT_APPLICABLE]


@dataclass
class SuiteRow:
    """A leaderboard row with the suite it came from: the same setting in two suites is two rows (other budgets)."""

    suite: str
    row: LeaderboardRow


@dataclass
class SiteData:
    """Everything a page shows: the suites, in name order, and the replication lines (claims file order)."""

    suites: list[SuiteView]
    lines: list[Line]

    def suite_rows(self) -> list[SuiteRow]:
        return [SuiteRow(s.name, r) for s in self.suites for r in s.rows]

    def record(self, suite: str, run_id: str) -> RunRecord:
        return next(s for s in self.suites if s.name == suite).records[run_id]

    def tasks(self) -> list[str]:
        return sorted({r.row.task for r in self.suite_rows()})

    def methods(self) -> list[str]:
        return sorted({r.row.method for r in self.suite_rows()} | {f.method for s in self.suites for f in s.failed})


def load_site_data(results: Path, claims_path: Path | None = None) -> SiteData:
    """Every folder under `results` with a runs/ folder (hidden scratch folders skipped, as `slimbench replicate`
    does), and the claims of `claims_path` (default: the shipped claims.yaml) judged on exactly those rows."""
    from slimbench.harness.replicate.claims_file import load_claims
    from slimbench.harness.replicate.evaluation import evaluate
    from slimbench.harness.replicate.measurements import SuiteData
    from slimbench.harness.report.build import leaderboard_rows
    from slimbench.harness.report.leaderboards import failed_rows
    from slimbench.harness.run.records import load_records

    suites = []
    for folder in sorted(p for p in Path(results).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "runs").is_dir():
            continue
        records = load_records(folder / "runs")
        reproduction = folder / "reproduction.md"
        suites.append(SuiteView(folder.name, {r.run_id: r for r in sorted(records, key=lambda r: r.run_id)},
                                leaderboard_rows(records), failed_rows(records),
                                reproduction.read_text(encoding="utf-8") if reproduction.is_file() else None))
    lines = evaluate(load_claims(claims_path), [SuiteData(s.name, s.rows, s.records) for s in suites])
    return SiteData(suites, lines)


def headline(data: SiteData) -> list[SuiteRow]:
    """Per method family, its best setting over every suite, "best" as the matrix means it
    (`leaderboards.best_setting_key`), among the settings a visitor can trust to say something: those that compress
    (a sparsity-0 control is not a family's best; a family that never changes the size, distillation, keeps all),
    and of those the ones with a seed spread (two or more seeds) before one-seed rows. Ties go to the suite, task
    and method that sort first."""
    from slimbench.harness.report.leaderboards import best_setting_key

    families: dict[str, list[SuiteRow]] = {}
    for item in sorted(data.suite_rows(), key=lambda i: (i.suite, i.row.task, i.row.method, i.row.params_json)):
        if item.row.family != "baseline":
            families.setdefault(item.row.family, []).append(item)
    out = []
    for family in sorted(families):
        group = families[family]
        group = [i for i in group if i.row.compression_x > COMPRESSES] or group
        out.append(max(group, key=lambda i: (len(i.row.seeds.split()) > 1, best_setting_key(i.row))))
    return out


def plot_suite(data: SiteData, task: str) -> SuiteView:
    """The suite whose Pareto plot stands for a task: the one with the most settings on it (then the first by name).
    Suites train with their own budgets, so their rows are never mixed in one plot."""
    return min(data.suites, key=lambda s: (-sum(r.task == task for r in s.rows), s.name))


def only_pattern(row: LeaderboardRow | FailedRow) -> str:
    """The `slimbench run --only` glob that selects exactly this row's cells (every seed): the cell label
    task/model/method[given params]/s<seed>, with the glob characters of the label escaped (fnmatch reads `[` as a
    character class). A non-scalar parameter (a chain's stages) is matched by `*`."""
    given = json.loads(row.params_given)
    head = f"{row.task}/{row.model}/{row.method}"
    if any(isinstance(v, (list, dict)) for v in given.values()):
        return _escape(head) + "[[]*]/s*"
    params = ",".join(f"{k}={v}" for k, v in given.items())
    return _escape(head + (f"[{params}]" if params else "")) + "/s*"


def _escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def run_command(suite: str, row: LeaderboardRow | FailedRow) -> str:
    """The command that reruns one row's cells (a shell-quoted glob)."""
    return f"slimbench run configs/{suite}.yaml --only '{only_pattern(row)}'"


def matches_cell(label: str, row: LeaderboardRow) -> bool:
    """Whether `run_command`'s glob selects a cell label (the tests check it on real labels)."""
    return fnmatch.fnmatchcase(label, only_pattern(row))
