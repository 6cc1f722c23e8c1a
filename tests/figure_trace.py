"""What counts as a measured figure in prose or on a page, and whether a file generated from the run records holds
it: shared by the README/studies check and the site check.


What counts as a figure, in prose and tables (fenced code blocks, inline
`code` spans and link targets are left out first: commands, settings and paths are not measurements):

- a decimal number: 0.8215, -9.10, +0.69, −0.57 (the unicode minus reads as "-"), 41.6;
- a number marked as a ratio or a percentage: 1.54×, 18.78×, 2×, 39 %, 5%.

Not figures: plain integers (counts of seeds, cells, batches; years; line numbers), numbers glued to a word or a
hyphenated name (MobileNetV2-1.4, b64, 2e-3, T=2), and dotted versions (2.14.1).

A figure is traced when its text, with the sign, appears in a generated file: results/**/*.md and results/**/*.csv
(results/dataset/runs.csv included). A leading "+" may also match the unsigned number, "N×" the bare number N
(CSV columns hold ratios without the sign), "N %" may be written "N%" or come from a setting `key=F` of a
generated table with F = N/100 (sparsity=0.8 is 80 %), and "N×" from a setting `key=N`. A figure also traces to
a number of a record JSON (results/*/runs/*.json) written as the record writes it (a wall time of 20.31 s), and,
when shown with at least 3 decimals, to such a number rounded to the shown decimals; fewer decimals would match
nearly any of the records' numbers. Lists and the raw parts of a record (per-runtime timings and their
rounds, per-layer counts, input statistics) are left out: thousands of numbers there would trace a figure by chance.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
# a sign only when it stands alone (not the hyphen of a name), the number not glued to a word, a dot or a digit
_FIGURE = re.compile(
    r"(?<![\w.,/=-])(?P<sign>[+\-−](?=\d))?(?P<num>\d+(?:,\d{3})*(?:\.\d+)?)(?P<mark>\s?%|×)?(?![\w.]*\d|[\w])")
_TOKEN = re.compile(r"[+\-−]?\d+(?:,\d{3})*(?:\.\d+)?(?:\s?%|×)?")
_SETTING = re.compile(r"\b\w+=(\d+(?:\.\d+)?)\b")


def figures_in(text: str) -> list[tuple[int, str]]:
    """The (line, figure) pairs of a Markdown text, by the rule in this module's docstring."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731 - keeps line numbers
    text = _FENCE.sub(blank, text)
    text = _INLINE_CODE.sub(blank, text)
    text = _LINK_TARGET.sub(blank, text)
    found = []
    for m in _FIGURE.finditer(text):
        num, mark = m.group("num"), (m.group("mark") or "").strip()
        if "." not in num and not mark:
            continue                                   # a plain integer is a count, not a measurement
        sign = (m.group("sign") or "").replace("−", "-")
        found.append((text.count("\n", 0, m.start()) + 1, f"{sign}{num}{mark}"))
    return found


# record parts that hold thousands of raw numbers (timing rounds, per-layer counts, input statistics): a figure
# rounded from them would trace by chance, so they trace only through the tables built from them
_RAW_PARTS = frozenset({"latency", "speedup", "distinct_values", "normalisation", "kernels", "encodings"})


def _json_numbers(value, out: list[float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in _RAW_PARTS:
                _json_numbers(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append(float(value))


@cache
def generated_figures(results: Path = RESULTS) -> frozenset[str]:
    """Every number string of the generated files, normalised as figures_in writes them, built once."""
    tokens: set[str] = set()
    for path in [*results.rglob("*.md"), *results.rglob("*.csv")]:
        text = path.read_text(encoding="utf-8", errors="replace")
        for t in _TOKEN.findall(text):
            tokens.add(t.replace("−", "-").replace(" %", "%"))
        for s in _SETTING.findall(text):
            tokens.add(f"{float(s) * 100:g}%")
            tokens.add(f"{float(s):g}×")
    numbers: list[float] = []
    for path in results.glob("*/runs/*.json"):
        _json_numbers(json.loads(path.read_text()), numbers)
    tokens.update(f"{v:g}" for v in numbers)         # a record's own figure as written, e.g. 20.31 s
    for v in set(numbers):
        for d in (3, 4, 5, 6):
            tokens.add(f"{v:.{d}f}")
    return frozenset(tokens)


def traced(figure: str, tokens: frozenset[str]) -> bool:
    """Whether a figure from figures_in appears in the generated files' token set."""
    candidates = {figure}
    if figure.startswith("+"):
        candidates.add(figure[1:])
    if figure.endswith("×"):
        candidates.add(figure[:-1])
        if "." not in figure:
            candidates.add(figure[:-1] + ".0×")
    if figure.endswith("%"):
        candidates.add(f"{float(figure[:-1].lstrip('+').replace(',', '')):g}%")
    return any(c in tokens or c.replace(",", "") in tokens for c in candidates)


def untraced(paths: list[Path], tokens: frozenset[str]) -> list[str]:
    """'file:line: figure' for every figure of the given Markdown files that no generated file holds."""
    missing = []
    for path in paths:
        for line, figure in figures_in(path.read_text(encoding="utf-8")):
            if not traced(figure, tokens):
                missing.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}: {figure}")
    return missing


_HIDDEN = re.compile(r"<script.*?</script>|<style.*?</style>", re.S)
_TAG = re.compile(r"<[^>]+>")


def page_text(page: str) -> str:
    """An HTML page's visible text, line for line (markup, attributes, scripts and styles left out)."""
    import html

    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731 - keeps line numbers
    return html.unescape(_TAG.sub(blank, _HIDDEN.sub(blank, page)))
