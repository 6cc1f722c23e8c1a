"""Every figure the front page and the studies quote must come from a file generated from the run records
(tests/figure_trace.py says what counts as a figure and what traces it)."""

from __future__ import annotations

from pathlib import Path

from tests.figure_trace import ROOT, figures_in, generated_figures, untraced


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs" / "studies").glob("*.md"))]


def test_every_figure_in_the_docs_comes_from_a_generated_file():
    tokens = generated_figures()
    checked = sum(len(figures_in(p.read_text(encoding="utf-8"))) for p in _documents())
    missing = untraced(_documents(), tokens)
    print(f"{checked} figures checked, {checked - len(missing)} traced")
    for m in missing:
        print("untraced:", m)
    assert checked > 100
    assert not missing, f"{len(missing)} figures trace to no generated file:\n" + "\n".join(missing)


def test_an_invented_figure_is_reported(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("The baseline reaches 0.8215, pruning 0.123456 (+0.5 pts, 7.77×).\n\n"
                   "```bash\nslimbench run x --lr 0.123456\n```\nand `0.987654` in code is not a figure.\n")
    missing = untraced([doc], frozenset({"0.8215", "0.5"}))
    assert [m.split(": ", 1)[1] for m in missing] == ["0.123456", "7.77×"]


def test_what_counts_as_a_figure():
    text = ("torch 2.14.1, 2021, line 42, MobileNetV2-1.4, b64, lr 2e-3, T=2; "
            "0.8215 ± 0.0058, -9.10, +0.69, −0.57, 1.54×, 2×, 39 %, 5%")
    assert [f for _, f in figures_in(text)] == ["0.8215", "0.0058", "-9.10", "+0.69", "-0.57", "1.54×", "2×",
                                              "39%", "5%"]
