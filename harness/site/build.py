"""`slimbench site RESULTS OUT`: render every page, copy the records and the assets, and drop what an earlier build
left that this one did not write. Pages link each other and the records by relative paths only, so OUT opens from
the file system or any static host; everything is sorted and nothing carries a date, so the same records give the
same bytes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from slimbench.core.errors import SlimbenchError
from slimbench.harness.site import tables
from slimbench.harness.site.data import SiteData, SuiteRow, SuiteView, headline, load_site_data, plot_suite
from slimbench.harness.site.plots import alt_text, pareto_svg

MARKER = ".slimbench-site"             # marks a folder this command owns (and may prune)
ASSETS = ("site.css", "site.js")


@dataclass
class Output:
    """The files of one build, path (relative to OUT) → bytes, written only once complete."""

    files: dict[str, bytes] = field(default_factory=dict)

    def add(self, path: str, data: bytes | str) -> None:
        self.files[path] = data.encode("utf-8") if isinstance(data, str) else data


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("slimbench.harness.site", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined)


def _hardware_table(suite: SuiteView) -> tables.Table:
    """The machines and kernel pins the suite's records name, with how many records each."""
    seen: Counter[tuple[str, ...]] = Counter()
    for rec in suite.records.values():
        if rec.metrics is None:   # a failed or n/a cell measured nothing there
            continue
        hw = rec.hardware
        kernels = hw.kernels
        pins = ", ".join(f"{k}={v}" for k, v in sorted(kernels.pins.items())) if kernels else ""
        seen[(hw.cpu or "unknown", str(hw.logical_cpus or ""), hw.machine or "", hw.torch_cpu_capability or "",
              kernels.numerics if kernels else "unknown", pins, hw.cuda or "none")] += 1
    columns = [tables.Column(n, t) for n, t in (
        ("CPU", "the processor the records were measured on"), ("logical CPUs", "its logical CPUs"),
        ("machine", "the instruction-set architecture"), ("torch capability", "the kernels torch chose"),
        ("numerics", "the kernels every figure but latency used (pinned-* = the same on any x86-64 CPU)"),
        ("pins", "the environment variables that pinned them"), ("GPU", "the GPU, if any"),
        ("records", "how many of the suite's records name this machine"))]
    rows = [tables.Row([tables.Cell(v) for v in key] + [tables.Cell(str(n), str(n))])
            for key, n in sorted(seen.items())]
    return tables.Table(f"hardware-{suite.name}", "Where the records were measured", columns, rows)


def _pages(data: SiteData, out: Output) -> None:
    from slimbench.harness.run.numerics import numerics_line

    env = _environment()

    def page(path: str, template: str, **context: Any) -> None:
        root = "../" * path.count("/")
        out.add(path, env.get_template(template).render(root=root, **context))

    items = data.suite_rows()
    plots = []
    for task in data.tasks():
        suite = plot_suite(data, task)
        out.add(f"plots/pareto_{task}.svg", pareto_svg(suite.rows, task))
        plots.append({"task": task, "suite": suite.name, "src": f"plots/pareto_{task}.svg",
                      "alt": alt_text(suite.rows, task, suite.name)})
    page("index.html", "index.html", title="slimbench results", plots=plots, suites=data.suites,
         headline=tables.headline_table(data, headline(data)), records=sum(len(s.records) for s in data.suites))

    def rows_where(test: Any) -> list[SuiteRow]:
        return [i for i in items if test(i)]

    page("tasks/index.html", "list.html", title="Tasks", what="task",
         entries=[(f"{t}.html", t, len(rows_where(lambda i, t=t: i.row.task == t))) for t in data.tasks()])
    for task in data.tasks():
        table = tables.leaderboard_table(data, rows_where(lambda i, t=task: i.row.task == t), "rows",
                                         f"Every setting run on {task}, suite by suite", skip=("task",))
        plot = next(p for p in plots if p["task"] == task)
        page(f"tasks/{task}.html", "rows.html", title=f"Task {task}", table=table, plot=plot, intro="")
    page("methods/index.html", "list.html", title="Methods", what="method",
         entries=[(f"{m}.html", m, len(rows_where(lambda i, m=m: i.row.method == m))) for m in data.methods()])
    for method in data.methods():
        table = tables.leaderboard_table(data, rows_where(lambda i, m=method: i.row.method == m), "rows",
                                         f"Every setting of {method} on every task and model", skip=("method",))
        page(f"methods/{method}.html", "rows.html", title=f"Method {method}", table=table, plot=None, intro="")
    page("suites/index.html", "list.html", title="Suites", what="suite",
         entries=[(f"{s.name}.html", s.name, len(s.rows)) for s in data.suites])
    for suite in data.suites:
        table = tables.leaderboard_table(data, rows_where(lambda i, s=suite.name: i.suite == s), "rows",
                                         f"The leaderboard of suite {suite.name}", skip=("suite",))
        records = sorted(suite.records.values(), key=lambda r: r.run_id)
        page(f"suites/{suite.name}.html", "suite.html", title=f"Suite {suite.name}", suite=suite, table=table,
             failed=tables.failed_table(suite.name, suite.broken, "failed") if suite.broken else None,
             not_applicable=tables.not_applicable_table(suite.not_applicable) if suite.not_applicable else None,
             hardware=_hardware_table(suite), numerics=numerics_line(records) if records else "",
             runtimes=tables.runtimes_table(suite.name, records))
    from slimbench.harness.replicate.evaluation import summary_sentence

    verdicts = sorted({line.verdict for line in data.lines})
    families = sorted({tables.claim_family(line) for line in data.lines})
    page("replication.html", "replication.html", title="Replication: published claims beside our measurements",
         table=tables.replication_table(data.lines), verdicts=verdicts, families=families,
         summary=summary_sentence(data.lines) if data.lines else "No claims were evaluated.")
    page("reproduction.html", "reproduction.html", title="Reproduction: fresh runs beside the committed records",
         suites=[s for s in data.suites if s.reproduction is not None])


def build_site(results: Path, out_dir: Path, claims_path: Path | None = None) -> dict[str, bytes]:
    """Build the whole site into `out_dir`; returns the files written (relative path → bytes)."""
    results, out_dir = Path(results), Path(out_dir)
    if not results.is_dir():
        raise SlimbenchError(f"results folder {results} does not exist")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise SlimbenchError(f"{out_dir} holds files a site build did not write; give an empty or new folder")
    data = load_site_data(results, claims_path)
    if not data.suites:
        raise SlimbenchError(f"no <suite>/runs folders of records under {results}")
    out = Output()
    out.add(MARKER, "written by `slimbench site`; the next build replaces every file here but "
                    "screenshots/ and studies/\n")
    assets = resources.files("slimbench.harness.site") / "static"
    for name in ASSETS:
        out.add(f"assets/{name}", assets.joinpath(name).read_bytes())
    for suite in data.suites:
        for run_id in sorted(suite.records):
            out.add(f"records/{suite.name}/{run_id}.json", (results / suite.name / "runs" / f"{run_id}.json")
                    .read_bytes())
    _pages(data, out)
    _write(out_dir, out.files)
    return out.files


# beside the site, not written by the generator: the browser test's screenshots and the studies in Markdown
KEPT = ("screenshots", "studies")


def _write(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write what changed, then remove files and folders an earlier build left that this one did not write."""
    for rel in sorted(files):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != files[rel]:
            path.write_bytes(files[rel])
    for path in sorted(out_dir.rglob("*"), reverse=True):
        rel = path.relative_to(out_dir).as_posix()
        if rel.startswith(KEPT):
            continue
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
