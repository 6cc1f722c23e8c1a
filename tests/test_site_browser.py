"""The generated site works in a real browser, not only as files: headless Chromium opens `slimbench site`'s pages
from a copy of the committed results, sorts a table by a numeric column both ways, filters rows by text and the
replication claims by verdict, follows a figure to its run record, and logs no console error on the way. It saves
screenshots of the home page (desktop and phone width) and of a method page to tests/artifacts/ for a look by eye.

`python -m tests.test_site_browser` refreshes the committed screenshots (docs/screenshots/) from the committed site
(docs/, built by `slimbench site results docs`). A rebuild removes files it did not write, these included, so
run it after each rebuild.

Chromium and its driver come from Debian (`chromium`, `chromium-driver`; `./reproduce.sh test` installs them); the
driver is named explicitly, so selenium downloads nothing. Without them these tests skip, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

pytestmark = pytest.mark.slow   # the site is built in a subprocess and a browser started once for the module

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS = REPO / "docs"
SUITES = ("quick", "prune35")        # small, and prune.channel runs in both: its page spans two suites
METHOD = "prune.channel"             # the method page the table tests use
DESKTOP = (1280, 900)
PHONE = (390, 844)

# Column values, row texts and row visibility in one round trip each (a call per cell would be seconds).
COLUMN_JS = """
const [table, col] = arguments;
return Array.from(table.tBodies).flatMap(b => Array.from(b.rows)).map(r => {
  const cell = r.cells[col];
  return [r.textContent, cell ? (cell.dataset.sort ?? cell.textContent.trim()) : null];
});
"""
VISIBLE_ROWS_JS = """
return Array.from(arguments[0].querySelectorAll(arguments[1])).map(r => [
  r.getClientRects().length > 0, r.dataset.verdict ?? null, r.textContent.trim()]);
"""


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None: the one reason they may skip."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return (f"headless Chromium not installed ({', '.join(absent)} missing): `apt-get install chromium "
                "chromium-driver`, which `./reproduce.sh test` does when it can")
    return None


def start_browser() -> Chrome:
    """Headless Chromium through the system chromedriver, keeping the console log for the error check."""
    options = ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
                "--allow-file-access-from-files", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


def build_site(results: Path, out: Path) -> Path:
    """`slimbench site RESULTS OUT` in a subprocess, as a user runs it; its output in the failure message."""
    done = subprocess.run([sys.executable, "-m", "slimbench", "site", str(results), str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"slimbench site failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert (out / "index.html").is_file(), f"no index.html in {out}: {sorted(p.name for p in out.iterdir())}"
    return out


def open_page(driver: Chrome, path: Path) -> None:
    """Load a site file and wait until its scripts have run (file:// pages load synchronously, scripts may not)."""
    assert path.is_file(), f"the site has no {path.name} ({path})"
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")


def console_errors(driver: Chrome) -> list[str]:
    """SEVERE browser-console entries since the last call (reading the log empties it)."""
    return [f"{e.get('source', '')}: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def broken_links(driver: Chrome) -> list[str]:
    """Links and images of the open page that point at site files which do not exist."""
    urls = driver.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.href)"
        ".concat([...document.querySelectorAll('img[src]')].map(i => i.src))")
    broken = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme == "file" and not Path(unquote(parts.path)).exists():
            broken.append(url)
    return broken


def numeric(values: list[str | None]) -> list[float]:
    """The numeric data-sort values of a column, in row order; blanks and labels (e.g. a failed cell) left out."""
    out = []
    for v in values:
        try:
            out.append(float(v))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


def header_index(table: WebElement, pattern: str) -> tuple[WebElement, int]:
    """The first column header whose text matches `pattern` (e.g. ^accuracy), and its column index."""
    headers = (table.find_elements(By.CSS_SELECTOR, "thead tr:last-child th")
               or table.find_elements(By.CSS_SELECTOR, "tr:first-child th"))
    for i, th in enumerate(headers):
        if re.search(pattern, th.text.strip(), re.IGNORECASE):
            return th, i
    raise AssertionError(f"no column header matching {pattern!r}: {[th.text for th in headers]}")


def take_screenshots(driver: Chrome, site: Path, dest: Path) -> list[Path]:
    """Home page at desktop and phone width and a method page at desktop width, as PNGs under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    shots = []
    method = site / "methods" / f"{METHOD}.html"
    if not method.is_file():   # another site's methods: the first page, by name
        method = min((site / "methods").glob("*.html"))
    for name, page, size in [("home.png", site / "index.html", DESKTOP), ("home-phone.png", site / "index.html", PHONE),
                             ("method.png", method, DESKTOP)]:
        # a phone's viewport, not only a narrow window: width, pixel ratio and the mobile viewport rules
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size == PHONE})
        open_page(driver, page)
        path = dest / name
        assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
        shots.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return shots


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Chrome) -> Path:
    """The site of a small copy of the committed results (records and reports; no model artifacts)."""
    root = tmp_path_factory.mktemp("site")
    for suite in SUITES:
        shutil.copytree(REPO / "results" / suite, root / "results" / suite,
                        ignore=shutil.ignore_patterns("artifacts", "wandb", ".cache", ".reproduce"))
    return build_site(root / "results", root / "out")


@pytest.fixture
def driver(browser: Chrome) -> Iterator[Chrome]:
    """The module's browser, at desktop size, with its console log emptied before and checked after each test."""
    browser.set_window_size(*DESKTOP)
    console_errors(browser)
    yield browser
    errors = console_errors(browser)
    assert not errors, "browser console errors:\n" + "\n".join(errors)


# -- tests ------------------------------------------------------------------------------------------------------
def test_sortable_column_sorts_numerically_both_ways(driver: Chrome, site: Path) -> None:
    """A click on a numeric header orders rows by their data-sort values (not as text), a second click reverses
    them, and aria-sort tells assistive technology which way."""
    open_page(driver, site / "methods" / f"{METHOD}.html")
    table = driver.find_element(By.CSS_SELECTOR, "table.sortable")
    th, col = header_index(table, r"^accuracy")
    assert th.get_attribute("scope") == "col" and th.get_attribute("title"), "a header says what its column measures"
    before = driver.execute_script(COLUMN_JS, table, col)
    assert len(set(numeric([v for _, v in before]))) >= 2, f"too few distinct values to see a sort: {before}"

    orders = []
    for _ in range(2):
        th.click()
        WebDriverWait(driver, 5).until(lambda d: th.get_attribute("aria-sort") in ("ascending", "descending"))
        rows = driver.execute_script(COLUMN_JS, table, col)
        values = numeric([v for _, v in rows])
        direction = th.get_attribute("aria-sort")
        assert values == sorted(values, reverse=direction == "descending"), f"not {direction}: {values}"
        assert sorted(r for r, _ in rows) == sorted(r for r, _ in before), "sorting lost or duplicated rows"
        orders.append((direction, [r for r, _ in rows]))
    (first, rows1), (second, rows2) = orders
    assert {first, second} == {"ascending", "descending"}, "a second click reverses the order"
    assert rows1 != rows2, "the second click did not change the row order"   # so one click at least moved rows
    others = [h.get_attribute("aria-sort") for h in table.find_elements(By.CSS_SELECTOR, "th") if h != th]
    assert all(s in (None, "", "none") for s in others), f"only the sorted column says it is sorted: {others}"


def test_text_filter_hides_rows_without_the_text(driver: Chrome, site: Path) -> None:
    """Typing in a table's filter box leaves only the rows containing the text, and clearing it brings all back."""
    open_page(driver, site / "methods" / f"{METHOD}.html")
    box = driver.find_element(By.CSS_SELECTOR, "input.table-filter")
    table_id = box.get_attribute("data-table")
    assert table_id, "a filter box names its table in data-table"
    table = driver.find_element(By.ID, table_id)
    rows = driver.execute_script(VISIBLE_ROWS_JS, table, "tbody tr")
    texts = [t for _, _, t in rows]
    # a cell's text found in some rows but not all: the filter must hide something and keep something
    cells = driver.execute_script(
        "return [...arguments[0].querySelectorAll('tbody td')].map(c => c.textContent.trim())", table)
    term = next((c for c in cells if len(c) >= 3 and 0 < sum(c.lower() in t.lower() for t in texts) < len(texts)),
                None)
    assert term, f"no cell text tells rows apart in #{table_id}"
    box.send_keys(term)
    WebDriverWait(driver, 5).until(
        lambda d: not all(v for v, _, _ in d.execute_script(VISIBLE_ROWS_JS, table, "tbody tr")))
    shown = driver.execute_script(VISIBLE_ROWS_JS, table, "tbody tr")
    assert all(term.lower() in t.lower() for v, _, t in shown if v), f"a shown row lacks {term!r}"
    assert any(v for v, _, _ in shown), f"filtering for {term!r} hid every row"
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)   # typed, not clear(): a script listening for input events sees it
    WebDriverWait(driver, 5).until(lambda d: all(v for v, _, _ in d.execute_script(VISIBLE_ROWS_JS, table,
                                                                                    "tbody tr")))


def test_verdict_filter_shows_only_that_verdict(driver: Chrome, site: Path) -> None:
    """Choosing a verdict on the replication page leaves only its claims' rows; "all" brings the others back."""
    open_page(driver, site / "replication.html")
    rows = driver.execute_script(VISIBLE_ROWS_JS, driver.find_element(By.TAG_NAME, "body"), "tr[data-verdict]")
    assert rows and all(v for v, _, _ in rows), "every claim row is shown at first"
    verdicts = [v for _, v, _ in rows]
    select = Select(driver.find_element(By.ID, "verdict-filter"))
    options = [o.get_attribute("value") for o in select.options]
    assert "all" in options and set(options) - {"all"} == set(verdicts), \
        f"the filter offers the verdicts present, and all: {options} vs {sorted(set(verdicts))}"
    assert driver.find_elements(By.ID, "family-filter"), "the page has a family filter too"
    chosen = min((v for v in set(verdicts)), key=verdicts.count)   # the rarest: most rows must hide
    assert verdicts.count(chosen) < len(verdicts), f"every claim row says {chosen!r}: nothing to filter"

    select.select_by_value(chosen)
    WebDriverWait(driver, 5).until(lambda d: not all(
        v for v, _, _ in d.execute_script(VISIBLE_ROWS_JS, d.find_element(By.TAG_NAME, "body"), "tr[data-verdict]")))
    shown = driver.execute_script(VISIBLE_ROWS_JS, driver.find_element(By.TAG_NAME, "body"), "tr[data-verdict]")
    assert {v for vis, v, _ in shown if vis} == {chosen}, f"rows of other verdicts shown under {chosen!r}"
    assert sum(vis for vis, _, _ in shown) == verdicts.count(chosen), "a row of the chosen verdict was hidden"

    select.select_by_value("all")
    WebDriverWait(driver, 5).until(lambda d: all(
        v for v, _, _ in d.execute_script(VISIBLE_ROWS_JS, d.find_element(By.TAG_NAME, "body"), "tr[data-verdict]")))


def test_record_link_opens_its_run_record(driver: Chrome, site: Path) -> None:
    """A figure's link opens the run record it comes from: the JSON loaded names the run the link names."""
    open_page(driver, site / "methods" / f"{METHOD}.html")
    link = driver.find_element(By.CSS_SELECTOR, "a.record")
    href = link.get_attribute("href") or ""
    raw = driver.execute_script("return arguments[0].getAttribute('href')", link)
    match = re.fullmatch(r"\.\./records/([^/]+)/([^/]+)\.json", raw or "")
    assert match, f"a record link is ../records/<suite>/<run_id>.json, not {raw!r}"
    suite, run_id = match.groups()
    driver.get(href)
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.TAG_NAME, "pre"))
    record = json.loads(driver.find_element(By.TAG_NAME, "pre").text)
    assert record["run_id"] == run_id and record["suite"] == suite, (record["run_id"], record["suite"], raw)


def test_pages_have_no_broken_links_and_screenshots(driver: Chrome, site: Path) -> None:
    """Home, a method page and the replication page link only to files the site has; screenshots for a look."""
    for page in (site / "index.html", site / "methods" / f"{METHOD}.html", site / "replication.html"):
        open_page(driver, page)
        assert not broken_links(driver), f"{page.relative_to(site)} links to missing files: {broken_links(driver)}"
    for shot in take_screenshots(driver, site, ARTIFACTS):
        assert shot.stat().st_size > 5000, f"{shot} looks blank"


def refresh_committed_screenshots(site: Path = DOCS, dest: Path | None = None) -> list[Path]:
    """The screenshots docs/ shows, retaken from the committed site (run after `slimbench site results docs`)."""
    reason = missing_browser()
    if reason:
        raise SystemExit(reason)
    if not (site / "index.html").is_file():
        raise SystemExit(f"no site at {site}: build it first with `slimbench site results {site}`")
    driver = start_browser()
    try:
        return take_screenshots(driver, site, dest or site / "screenshots")
    finally:
        driver.quit()


if __name__ == "__main__":
    for written in refresh_committed_screenshots():
        print(written)
