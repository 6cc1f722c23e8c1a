"""The static site (`slimbench site`), built from a copy of two committed suites: its pages exist, every accuracy
figure links to the record that holds it, the tables carry what the browser script needs, noise is marked as in
leaderboard.md, the rerun commands select exactly a row's cells, nothing loads from the network, and the same records
give the same bytes."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from slimbench.core.errors import SlimbenchError
from slimbench.harness.replicate.claim_terms import NOT_MEASURED, VERDICTS
from slimbench.harness.site.build import build_site

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("quick", "prune35")


def _copy_results(dest: Path) -> tuple[Path, Path]:
    """The suites' records and reproduction tables (not their artifacts), and the claims that name them."""
    results = dest / "results"
    for suite in SUITES:
        shutil.copytree(ROOT / "results" / suite / "runs", results / suite / "runs")
        if (ROOT / "results" / suite / "reproduction.md").is_file():
            shutil.copy(ROOT / "results" / suite / "reproduction.md", results / suite / "reproduction.md")
    raw = yaml.safe_load((ROOT / "configs" / "claims.yaml").read_text(encoding="utf-8"))
    claims = [c for c in raw["claims"] if c["kind"] == "records" and set(c.get("suites", [])) & set(SUITES)]
    claims_path = dest / "claims.yaml"
    claims_path.write_text(yaml.safe_dump({"claims": claims}, allow_unicode=True), encoding="utf-8")
    return results, claims_path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("site")
    results, claims = _copy_results(base)
    build_site(results, base / "out", claims)
    return base / "out"


class Page(HTMLParser):
    """The parts of a page the tests read: tables (headers, cells with their record links), links and sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.urls: list[str] = []
        self.selects: dict[str, list[str]] = {}
        self.h1 = 0
        self.html_lang = ""
        self._cell: dict | None = None
        self._link: dict | None = None
        self._select: str | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.urls += [a[k] for k in ("href", "src") if k in a]
        if tag == "html":
            self.html_lang = a.get("lang", "")
        elif tag == "h1":
            self.h1 += 1
        elif tag == "table":
            self.tables.append({"attrs": a, "th": [], "rows": [], "thead": False})
        elif tag == "thead":
            self.tables[-1]["thead"] = True
        elif tag == "th":
            self.tables[-1]["th"].append(a)
        elif tag == "tr" and self.tables and self.tables[-1]["thead"] and self.tables[-1]["th"]:
            self.tables[-1]["rows"].append({"attrs": a, "cells": []})
        elif tag == "td":
            self._cell = {"attrs": a, "text": "", "links": []}
            self.tables[-1]["rows"][-1]["cells"].append(self._cell)
        elif tag == "a" and self._cell is not None and "record" in a.get("class", "").split():
            self._link = {"href": a["href"], "text": ""}
            self._cell["links"].append(self._link)
        elif tag == "select":
            self._select = a.get("id", "")
            self.selects[self._select] = []
        elif tag == "option" and self._select is not None:
            self.selects[self._select].append(a["value"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "a":
            self._link = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data
        if self._link is not None:
            self._link["text"] += data


def _parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_pages_exist(site: Path) -> None:
    for rel in ("index.html", "tasks/index.html", "tasks/fashion-mnist.html", "tasks/synth-kws.html",
                "tasks/rotten-tomatoes.html", "methods/index.html", "methods/prune.magnitude.html",
                "methods/quant.ptq_int8.html", "suites/index.html", "suites/quick.html", "suites/prune35.html",
                "replication.html", "reproduction.html", "assets/site.css", "assets/site.js",
                "plots/pareto_fashion-mnist.svg"):
        assert (site / rel).is_file(), rel
    copied = sorted(p.name for p in (site / "records" / "quick").glob("*.json"))
    assert copied == sorted(p.name for p in (ROOT / "results/quick/runs").glob("*.json")) and len(copied) == 22
    for path in _pages(site):
        page = _parse(path)
        assert page.html_lang == "en" and page.h1 == 1, path
        text = path.read_text(encoding="utf-8")
        assert "<title>" in text
        for target in ("index.html", "tasks/index.html", "methods/index.html", "suites/index.html",
                       "replication.html", "reproduction.html"):   # the nav, relative from every page
            assert ("../" * len(path.relative_to(site).parts[:-1])) + target in page.urls, (path, target)


def test_every_record_link_holds_the_figure_shown(site: Path) -> None:
    links = 0
    for path in _pages(site):
        for table in _parse(path).tables:
            for row in table["rows"]:
                for cell in row["cells"]:
                    for link in cell["links"]:
                        target = (path.parent / link["href"]).resolve()
                        assert target.is_file(), (path, link["href"])
                        record = json.loads(target.read_text(encoding="utf-8"))
                        assert link["text"] == f"{record['metrics']['accuracy']:.4f}" in cell["text"]
                        links += 1
    assert links > 100
    # one figure pinned: the quick suite's fashion-mnist baseline, seed 0, as its committed record says
    quick = _parse(site / "suites/quick.html")
    cells = [c for t in quick.tables for r in t["rows"] for c in r["cells"]
             if any(link["href"] == "../records/quick/0151c73d6477.json" for link in c["links"])]
    assert [c["text"].strip() for c in cells] == ["0.8215"]


def test_tables_are_sortable_with_explained_headers(site: Path) -> None:
    tables = 0
    for path in _pages(site):
        for table in _parse(path).tables:
            tables += 1
            assert table["attrs"].get("class") == "sortable" and table["thead"], path
            assert table["th"] and all(th.get("scope") == "col" and th.get("title") for th in table["th"]), path
            for row in table["rows"]:
                assert len(row["cells"]) == len(table["th"]), path
                for cell in row["cells"]:
                    if "data-sort" in cell["attrs"]:
                        float(cell["attrs"]["data-sort"])
    assert tables == 18   # home 1, tasks 3, methods 9, suites 2 × (hardware + leaderboard), replication 1
    filters = re.findall(r'<input class="table-filter"[^>]*data-table="([^"]+)"',
                         (site / "suites/quick.html").read_text(encoding="utf-8"))
    assert filters == ["rows"]


def test_noise_marks_read_as_in_leaderboard_md(site: Path) -> None:
    """Δ and speedup cells carry the Markdown table's own text: * / n.s. / (1 seed) and ≈1.00×."""
    for suite in SUITES:
        markdown = (ROOT / "results" / suite / "leaderboard.md").read_text(encoding="utf-8")
        page = _parse(site / f"suites/{suite}.html")
        table = next(t for t in page.tables if t["attrs"]["id"] == "rows")
        for row in table["rows"]:
            texts = [c["text"].strip() for c in row["cells"]]
            delta, speed_b1 = texts[6], texts[8]
            assert f"| {delta} " in markdown or delta == "0", delta
            assert speed_b1 in markdown
    prune35 = (site / "suites/prune35.html").read_text(encoding="utf-8")
    assert " (n.s.)</td>" in prune35 or " *</td>" in prune35
    assert "≈1.00×" in prune35


def test_rerun_command_selects_exactly_the_rows_cells(site: Path) -> None:
    from slimbench.harness.report.build import leaderboard_rows
    from slimbench.harness.run.records import load_records
    from slimbench.harness.run.suite import load_suite
    from slimbench.harness.site.data import matches_cell, run_command

    for suite_name in SUITES:
        cells = load_suite(ROOT / "configs" / f"{suite_name}.yaml").cells
        rows = leaderboard_rows(load_records(ROOT / "results" / suite_name / "runs"))
        page = (site / f"suites/{suite_name}.html").read_text(encoding="utf-8")
        for row in rows:
            chosen = {c.run_id for c in cells if matches_cell(c.label, row)}
            assert chosen == set(row.run_ids.split()), (suite_name, row.method, row.params_given)
            assert run_command(suite_name, row).replace("'", "&#39;") in page


def test_replication_rows_and_filters(site: Path) -> None:
    page = _parse(site / "replication.html")
    table = next(t for t in page.tables if t["attrs"]["id"] == "replication")
    verdicts = [row["attrs"]["data-verdict"] for row in table["rows"]]
    assert verdicts and set(verdicts) <= {*VERDICTS, NOT_MEASURED}
    assert page.selects["verdict-filter"] == ["all", *sorted(set(verdicts))]
    families = {row["attrs"]["data-family"] for row in table["rows"]}
    assert page.selects["family-filter"] == ["all", *sorted(families)] and families == {"distill", "prune"}
    claims = yaml.safe_load((ROOT / "configs/claims.yaml").read_text(encoding="utf-8"))["claims"]
    ids = {c["id"] for c in claims if c["kind"] == "records" and set(c.get("suites", [])) & set(SUITES)}
    assert {row["cells"][0]["text"] for row in table["rows"]} == ids


def test_reproduction_page_shows_the_committed_table(site: Path) -> None:
    text = (site / "reproduction.html").read_text(encoding="utf-8")
    first = (ROOT / "results/quick/reproduction.md").read_text(encoding="utf-8").splitlines()[0]
    assert first.replace("&", "&amp;").replace("<", "&lt;") in text


def test_nothing_loads_from_the_network(site: Path) -> None:
    for path in _pages(site):
        for url in _parse(path).urls:
            assert not re.match(r"^(https?:)?//", url), (path, url)
    css = (site / "assets/site.css").read_text(encoding="utf-8")
    assert "url(" not in css and "@import" not in css
    for svg in (site / "plots").glob("*.svg"):
        text = svg.read_text(encoding="utf-8")
        assert not re.search(r'(xlink:)?href="(https?:)?//', text)
        assert "<dc:date>" not in text   # no date: the bytes depend on the rows only


def test_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    (tmp_path / "results").mkdir()
    with pytest.raises(SlimbenchError, match="did not write"):
        build_site(tmp_path / "results", tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_site_help(capsys: pytest.CaptureFixture[str]) -> None:
    from slimbench.harness.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["site", "--help"])
    assert exc.value.code == 0
    assert "RESULTS" in capsys.readouterr().out


@pytest.mark.slow
def test_rebuild_is_byte_identical(site: Path, tmp_path: Path) -> None:
    """A second build from the same records, elsewhere and over the first, gives the same files and bytes; a file
    the first build wrote and the second does not is removed."""
    results, claims = _copy_results(tmp_path)
    again = tmp_path / "again"
    build_site(results, again, claims)
    first = {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    second = {p.relative_to(again).as_posix(): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    shutil.rmtree(results / "prune35")
    build_site(results, again, claims)
    assert not (again / "suites/prune35.html").exists() and not (again / "records/prune35").exists()
