"""The committed site (docs/) shows only figures the records yield, and is what `slimbench site` builds today.

A figure on a page is what tests/figure_trace.py counts as one in the page's visible text, traced by the same rule
as the README's figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.figure_trace import RESULTS, ROOT, figures_in, generated_figures, page_text, traced

SITE = ROOT / "docs"


def untraced_pages(site: Path, results: Path) -> dict[str, list[str]]:
    tokens = generated_figures(results)
    missing: dict[str, list[str]] = {}
    for path in sorted(site.rglob("*.html")):
        bad = [f for _, f in figures_in(page_text(path.read_text())) if not traced(f, tokens)]
        if bad:
            missing[str(path.relative_to(site))] = bad
    return missing


def test_every_figure_on_the_committed_site_comes_from_a_record():
    pages = sorted(SITE.rglob("*.html"))
    assert len(pages) > 10, "the committed site is missing: build it with `slimbench site results docs`"
    shown = sum(len(figures_in(page_text(p.read_text()))) for p in pages)
    assert shown > 1000   # the check is about the tables' figures, so it must see them
    missing = untraced_pages(SITE, RESULTS)
    assert not missing, f"figures no record yields: {missing}"


def test_an_invented_figure_is_reported(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.html").write_text('<p title="9.87654">accuracy <b>0.8215</b> and 0.123456, 3.97×</p>')
    results = tmp_path / "results"
    (results / "s").mkdir(parents=True)
    (results / "s" / "leaderboard.md").write_text("| 0.8215 | 3.97× |\n")
    assert untraced_pages(site, results) == {"page.html": ["0.123456"]}


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
