"""The committed site (docs/) shows only figures the records yield, and is what `slimbench site` builds today.

A figure is a decimal number or a ratio with `×` in a page's visible text (markup, scripts, styles, links and
sort keys left out). It is traced when the same text appears in a file the report generated from the records
(results/**/*.md, *.csv) or when a number in a run record rounds to it at the figure's own decimals.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs"
RESULTS = ROOT / "results"
FIGURE = re.compile(r"[-+−]?\d+\.\d+×?|\d+×")
HIDDEN = re.compile(r"<script.*?</script>|<style.*?</style>", re.S)
ATTRIBUTES = re.compile(r'\s(?:href|src|data-sort|title|alt|id|class)="[^"]*"')


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def traced_figures(results: Path) -> set[str]:
    """Every figure text the generated tables hold, and every record number at 1 to 4 decimals."""
    found: set[str] = set()
    for path in [*results.rglob("*.md"), *results.rglob("*.csv")]:
        found |= {f.lstrip("+-−") for f in FIGURE.findall(path.read_text(errors="ignore"))}
    for path in results.glob("*/runs/*.json"):
        for number in _numbers(json.loads(path.read_text())):
            found |= {f"{abs(number):.{d}f}" for d in range(1, 5)}
    return found


def visible_figures(page: str) -> list[str]:
    text = html.unescape(re.sub(r"<[^>]+>", " ", ATTRIBUTES.sub("", HIDDEN.sub("", page))))
    return FIGURE.findall(text)


def untraced(site: Path, results: Path) -> dict[str, list[str]]:
    known = traced_figures(results)
    missing: dict[str, list[str]] = {}
    for path in sorted(site.rglob("*.html")):
        bad = [f for f in visible_figures(path.read_text()) if f.lstrip("+-−").rstrip("×") not in known
               and f.lstrip("+-−") not in known]
        if bad:
            missing[str(path.relative_to(site))] = bad
    return missing


def test_every_figure_on_the_committed_site_comes_from_a_record():
    pages = sorted(SITE.rglob("*.html"))
    assert len(pages) > 10, "the committed site is missing: build it with `slimbench site results docs`"
    shown = sum(len(visible_figures(p.read_text())) for p in pages)
    assert shown > 1000   # the check is about the tables' figures, so it must see them
    missing = untraced(SITE, RESULTS)
    assert not missing, f"figures no record yields: {missing}"


def test_an_invented_figure_is_reported(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.html").write_text('<p title="9.87654">accuracy <b>0.8215</b> and 0.123456, 3.97×</p>')
    results = tmp_path / "results"
    (results / "s").mkdir(parents=True)
    (results / "s" / "leaderboard.md").write_text("| 0.8215 | 3.97× |\n")
    assert untraced(site, results) == {"page.html": ["0.123456"]}


@pytest.mark.slow
def test_the_committed_site_is_what_the_records_build_today(tmp_path):
    out = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "slimbench", "site", str(RESULTS), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    built = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    committed = {p.relative_to(SITE).as_posix(): p.read_bytes() for p in SITE.rglob("*")
                 if p.is_file() and not p.relative_to(SITE).as_posix().startswith(("screenshots/", "studies/"))}
    assert sorted(built) == sorted(committed), "rebuild the site: slimbench site results docs"
    stale = [name for name in built if built[name] != committed[name]]
    assert not stale, f"pages differ from a fresh build ({stale[:5]}); rebuild: slimbench site results docs"
