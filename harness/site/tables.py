"""The site's tables as plain data (cells with the raw number to sort on and the records they come from), built
from leaderboard rows and replication lines with the Markdown tables' own cell texts (`delta_cell`,
`speedup_cell`, `label_cell`, `short_params`), so a page and `leaderboard.md` never disagree on a figure or a
noise mark. The templates only lay these out."""

from __future__ import annotations

from dataclasses import dataclass, field

from slimbench.harness.replicate.evaluation import Line, claim_verdict
from slimbench.harness.report.build import delta_cell, label_cell, speedup_cell
from slimbench.harness.report.rows import FailedRow
from slimbench.harness.report.runtimes import delta_cell as runtime_delta_cell
from slimbench.harness.report.runtimes import runtime_rows, speedup_text
from slimbench.harness.report.stats import short_params
from slimbench.harness.run.records import RunRecord
from slimbench.harness.site.data import SiteData, SuiteRow, run_command


@dataclass(frozen=True)
class RecordLink:
    """One run record behind a figure: its copy's path from the site root and the accuracy it holds."""

    path: str
    accuracy: str                       # the record's test accuracy as the cell prints it (4 decimals)
    title: str


@dataclass
class Cell:
    text: str
    sort: str | None = None             # the raw number the column sorts on (data-sort); None: sort on the text
    links: list[RecordLink] = field(default_factory=list)
    page: str | None = None             # a page of the site the text links to, from the site root
    code: bool = False                  # a command, shown as code


@dataclass(frozen=True)
class Column:
    name: str
    title: str                          # what the column means (the header's tooltip)


@dataclass
class Row:
    cells: list[Cell]
    attrs: dict[str, str] = field(default_factory=dict)   # data-* attributes of the <tr> (filters read them)


@dataclass
class Table:
    id: str
    caption: str
    columns: list[Column]
    rows: list[Row]


COLUMNS = {
    "suite": Column("suite", "the suite file (configs/<suite>.yaml) whose run records give this row"),
    "task": Column("task", "the dataset and its test split"),
    "model": Column("model", "the network architecture before compression"),
    "method": Column("method", "the compression method, as registered (slimbench list methods)"),
    "family": Column("family", "the method family the headline picks one setting of"),
    "params": Column("params", "the parameters the suite file set for the method"),
    "seeds": Column("seeds", "the seeds averaged over"),
    "accuracy": Column("accuracy", "test accuracy, mean ± std over seeds; each seed's figure links to its run record"),
    "delta": Column("Δ acc (pts)", "accuracy minus the same seed's trained baseline, in points; * beyond the seeds' "
                                   "spread, n.s. inside it"),
    "compression": Column("compression", "the fp32 reference's stored bytes over this model's (same stored form)"),
    "speedup_b1": Column("speedup b1", "baseline latency over this model's at batch 1, same runtime and process; "
                                       "≈1.00× = the timing band, widened by the run-to-run spread, contains 1"),
    "speedup_bn": Column("speedup bN", "the same at the suite's batch size N"),
    "label": Column("storage / compute", "what the stored file holds and what the deployed kernels execute, "
                                         "measured; ⚠ = the method's claim is contradicted"),
    "rerun": Column("how to reproduce this row", "the command that reruns this row's cells"),
    "error": Column("error", "what the failed cell ended with"),
    "why": Column("why", "why the method cannot apply to the model's architecture"),
}


def _links(data: SiteData, item: SuiteRow) -> list[RecordLink]:
    out = []
    for run_id in item.row.run_ids.split():
        rec = data.record(item.suite, run_id)
        accuracy = rec.metrics.accuracy if rec.metrics is not None else float("nan")
        out.append(RecordLink(f"records/{item.suite}/{run_id}.json", f"{accuracy:.4f}",
                              f"seed {rec.seed}: run record {run_id}"))
    return out


def _cells(data: SiteData, item: SuiteRow) -> dict[str, Cell]:
    r = item.row
    many = len(r.seeds.split()) > 1
    return {
        "suite": Cell(item.suite, page=f"suites/{item.suite}.html"),
        "task": Cell(r.task, page=f"tasks/{r.task}.html"),
        "model": Cell(r.model),
        "method": Cell(r.method, page=f"methods/{r.method}.html"),
        "family": Cell(r.family),
        "params": Cell(short_params(r.params_given)),
        "seeds": Cell(r.seeds),
        "accuracy": Cell(f"{r.accuracy:.4f} ± {r.accuracy_std:.4f}" if many else "", f"{r.accuracy:.6g}",
                         _links(data, item)),
        "delta": Cell(delta_cell(r), f"{100 * r.delta_accuracy:.6g}"),
        "compression": Cell(f"{r.compression_x:.2f}×", f"{r.compression_x:.6g}"),
        "speedup_b1": Cell(speedup_cell(r.speedup_b1_x, r.speedup_b1_low, r.speedup_b1_high), f"{r.speedup_b1_x:.6g}"),
        "speedup_bn": Cell(speedup_cell(r.speedup_bn_x, r.speedup_bn_low, r.speedup_bn_high), f"{r.speedup_bn_x:.6g}"),
        "label": Cell(label_cell(r)),
        "rerun": Cell(run_command(item.suite, r), code=True),
    }


LEADERBOARD = ["suite", "task", "model", "method", "params", "seeds", "accuracy", "delta", "compression",
               "speedup_b1", "speedup_bn", "label", "rerun"]
HEADLINE = ["family", "method", "delta", "compression", "speedup_bn", "accuracy", "suite", "task", "model", "seeds",
            "params"]   # the three figures first: they must show without scrolling


def leaderboard_table(data: SiteData, items: list[SuiteRow], table_id: str, caption: str,
                      skip: tuple[str, ...] = ()) -> Table:
    """Leaderboard rows, in the order given (the report's: task, model, family, method, params)."""
    keys = [k for k in LEADERBOARD if k not in skip]
    rows = [Row([_cells(data, item)[k] for k in keys]) for item in items]
    return Table(table_id, caption, [COLUMNS[k] for k in keys], rows)


def headline_table(data: SiteData, items: list[SuiteRow]) -> Table:
    rows = [Row([_cells(data, item)[k] for k in HEADLINE]) for item in items]
    return Table("headline", "Each method family's best setting over every suite", [COLUMNS[k] for k in HEADLINE],
                 rows)


def failed_table(suite: str, failed: list[FailedRow], table_id: str) -> Table:
    """Failed cells keep their place: the error they ended with and the command that retries them."""
    keys = ["task", "model", "method", "params", "seeds", "error", "rerun"]
    rows = [Row([Cell(f.task, page=f"tasks/{f.task}.html"), Cell(f.model),
                 Cell(f.method, page=f"methods/{f.method}.html"), Cell(short_params(f.params_given)),
                 Cell(f.seeds), Cell(f.error), Cell(run_command(suite, f), code=True)]) for f in failed]
    return Table(table_id, "Failed cells (rerunning the suite retries them)", [COLUMNS[k] for k in keys], rows)


def not_applicable_table(cells: list[FailedRow]) -> Table:
    """Cells whose method cannot apply to the model's architecture, with the reason the method gave."""
    keys = ["task", "model", "method", "params", "seeds", "why"]
    rows = [Row([Cell(f.task, page=f"tasks/{f.task}.html"), Cell(f.model),
                 Cell(f.method, page=f"methods/{f.method}.html"), Cell(short_params(f.params_given)), Cell(f.seeds),
                 Cell(f.error)]) for f in cells]
    return Table("not-applicable", "Cells whose method cannot apply to the model's architecture",
                 [COLUMNS[k] for k in keys], rows)


RUNTIME_COLUMNS = [
    Column("method", "the compression method and the parameters the suite set"),
    Column("model", "the network architecture before compression"),
    Column("runtime", "where the model was evaluated and timed (* = where the method deploys it)"),
    Column("accuracy", "test accuracy evaluated in this runtime, mean over seeds"),
    Column("Δ vs fp32 here (pts)", "minus the fp32 baseline evaluated in the same runtime, paired by seed; ± the "
                                   "95 % t-interval half-width"),
    Column("MB", "the file this runtime loads the model from"),
    Column("speedup b1", "the baseline's batch-1 latency over this model's in the same runtime"),
    Column("speedup bN", "the same at the suite's batch size N"),
    Column("what ran", "the precision the runtime ran in, or why it could not take the model"),
]


def runtimes_table(suite: str, records: list[RunRecord]) -> Table | None:
    """Every method in every runtime the suite measured (`measure.runtime_accuracy`), as runtimes.md lists it."""
    rows = runtime_rows(records)
    if not rows:
        return None
    by_id = {rec.run_id: rec for rec in records}

    def link(run_id: str, runtime: str) -> RecordLink:
        metrics = by_id[run_id].metrics
        quality = metrics.by_runtime.get(runtime) if metrics is not None else None
        text = "n/a" if quality is None or quality.accuracy is None else f"{quality.accuracy:.4f}"
        return RecordLink(f"records/{suite}/{run_id}.json", text, f"seed {by_id[run_id].seed}: run record {run_id}")

    out = []
    for r in rows:
        links = [link(run_id, r.runtime) for run_id in r.run_ids.split()]
        out.append(Row([
            Cell(r.method + (f" ({r.params})" if r.params else ""), page=f"methods/{r.method}.html"), Cell(r.model),
            Cell(r.runtime + (" *" if r.deployed else "")),
            Cell("—" if r.accuracy is None else f"{r.accuracy:.4f}", sort=None if r.accuracy is None else
                 f"{r.accuracy:.6f}", links=links),
            Cell(runtime_delta_cell(r), sort=None if r.delta_pts is None else f"{r.delta_pts:.6f}"),
            Cell("—" if r.file_mb is None else f"{r.file_mb:.2f}"),
            Cell(speedup_text(r.speedup_b1, r.speedup_b1_low, r.speedup_b1_high)),
            Cell(speedup_text(r.speedup_bn, r.speedup_bn_low, r.speedup_bn_high)), Cell(r.ran)],
            {"data-task": r.task}))
    return Table("runtimes", "Every model in every runtime (runtimes.md)", RUNTIME_COLUMNS, out)


def claim_family(line: Line) -> str:
    """What the family filter groups by: the method family a records claim selects, else the claim's kind."""
    claim = line.claim
    if claim.records is not None:
        return claim.records.where.method.split(".")[0].rstrip("*") or claim.kind
    return {"arch": "architecture"}.get(claim.kind, claim.kind)


REPLICATION_COLUMNS = [
    Column("claim", "the claim's id in configs/claims.yaml"),
    Column("family", "the method family the claim is about (or architecture / full-scale)"),
    Column("claim text", "what the paper says"),
    Column("source", "the paper or repository, with its table or section"),
    Column("where measured", "the suite, task, model and method of the row read, or the model built now"),
    Column("measured", "the value measured, with its spread and seeds"),
    Column("verdict", "this row's verdict under the claim's rule, on the whole interval"),
    Column("claim's verdict", "the verdict over all the claim's rows (mixed when they disagree)"),
    Column("reason", "why this row got its verdict"),
]


def replication_table(lines: list[Line]) -> Table:
    """One row per claim line, in the claims file's order, with its verdict and family on the <tr> for filters."""
    by_claim: dict[str, list[Line]] = {}
    for line in lines:
        by_claim.setdefault(line.claim.id, []).append(line)
    rows = []
    for line in lines:
        family = claim_family(line)
        value = "" if line.value is None else f"{line.value:.6g}"
        rows.append(Row([Cell(line.claim.id), Cell(family), Cell(line.claim.claim), Cell(line.claim.source),
                         Cell(line.where), Cell(line.measured, value or None), Cell(line.verdict),
                         Cell(claim_verdict(by_claim[line.claim.id])), Cell(line.reason)],
                        {"data-verdict": line.verdict, "data-family": family}))
    return Table("replication", "Every claim measured in every place it names", REPLICATION_COLUMNS, rows)
