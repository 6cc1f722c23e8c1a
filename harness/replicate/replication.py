"""Published claims beside our measurements: `slimbench replicate` → results/replication.md.

Each suite folder with a runs/ folder under the results root is read (`measurements.load_suites`: the same rows as
the leaderboard), each claim of configs/claims.yaml evaluated on the suites it names (`evaluation.evaluate`: values
and intervals from `measurements`, premises from `premises`, rules and verdicts from harness/replicate/claims.py).
This module renders: a summary line per claim (its overall verdict, `claim_verdict`, and its best-supported row,
`best_supported`), then each claim's section, its text, source, published figure and rule said once above its rows.
The counts that head the file are `summary_sentence`'s, which `slimbench replicate` prints too. The output has no
timestamps, so the same records give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from slimbench.harness.replicate.claim_schema import Claim
from slimbench.harness.replicate.claim_terms import (
    AT_LEAST_CAP,
    CLOSE_TO_CAP,
    INCONCLUSIVE,
    NEEDS_DATA,
    NEEDS_DATA_AND_GPU,
    NEEDS_GPU,
    NOT_MEASURED,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    SMALLER,
)
from slimbench.harness.replicate.claim_text import fmt, num, published_text, rule_text, span
from slimbench.harness.replicate.claims_file import load_claims
from slimbench.harness.replicate.evaluation import (
    MIXED,
    Line,
    best_supported,
    by_claim,
    claim_verdict,
    evaluate,
    summary_sentence,
    verdict_counts,
)
from slimbench.harness.replicate.measurements import SuiteData, load_suites, seeds_text
from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.report.stats import RUN_TO_RUN_SPEEDUP
from slimbench.harness.run.records import RunRecord, atomic_write_text

__all__ = ["replicate", "replication_markdown", "markdown", "markdown_parts"]

SUMMARY_HEADERS = ["claim", "source", "published", "our best-supported value", "row it is from", "verdict", "why"]
DETAIL_HEADERS = ["where measured", "measured (spread, seeds)", "verdict: reason"]


def _counted(rows: list[Line]) -> str:
    return ", ".join(f"{n} {v}" for v, n in verdict_counts(rows).items() if n)


def _verdict_cell(rows: list[Line]) -> str:
    overall = claim_verdict(rows)
    if len(rows) == 1:
        return overall
    if len({line.verdict for line in rows}) == 1:
        return f"{overall} (all {len(rows)} rows)"
    return f"{overall} ({_counted(rows)})"


def _value_cell(line: Line) -> str:
    """The measured value with its interval, its seeds and where the interval comes from, short."""
    if line.value is None:
        return "—"
    unit = line.claim.published.unit
    shown = fmt(line.value, unit)
    if line.noise == "exact":
        return f"{shown} (exact count)"
    if line.low is None or line.high is None:
        return f"{shown} ({seeds_text(line.seeds)}, no spread)"
    if line.low == line.high:
        return f"{shown} ({seeds_text(line.seeds)}, the same in each)"
    interval = span(line.low, line.high, unit).removeprefix("interval ")
    how = {"timing": ", widened timing band", "baseline": ", ±2σ of its baseline's seeds"}.get(line.noise, "")
    return f"{shown} ({interval}, {seeds_text(line.seeds)}{how})"


def _place(line: Line) -> str:
    """Which row the summary quotes, short: suite · task · model · method without run ids or a dirty-tree note (the
    claim's section keeps them); the model counted, for an architecture claim; — for a claim not measured here."""
    if line.value is None:
        return "—"
    if line.claim.kind == "arch":
        return "built now: " + line.where.rsplit(": ", 1)[-1]
    out: list[str] = []
    for part in line.where.split(" · "):
        if part.startswith("runs "):
            if " vs " in part and out:
                out[-1] += " vs " + part.split(" vs ", 1)[1]
        elif not part.startswith("⚠"):
            out.append(part)
    return " · ".join(out)


_YEAR = re.compile(r" (?:19|20)\d\d\b(?![.\d])")


def _short_source(source: str) -> str:
    """The source, short: up to its year when the year comes before any parenthesis or semicolon (authors and
    year), else up to the first comma, parenthesis or semicolon."""
    cuts = [i for i in (source.find(" ("), source.find("; ")) if i >= 0]
    year = _YEAR.search(source)
    if year and year.start() < min(cuts, default=len(source)):
        return source[:year.end()]
    cuts += [i for i in (source.find(", "),) if i >= 0]
    return source[:min(cuts, default=len(source))]


def _published_short(claim: Claim) -> str:
    """The published figure without the source's wording (the detail section quotes it)."""
    pub, rule = claim.published, claim.rule
    if pub.value is None:
        head = f"direction only ({'>' if rule.direction == 'higher' else '<'} {num(rule.no_effect or 0.0, pub.unit)})"
    elif rule.test == "loss_at_most":
        head = f"loss {num(pub.value, pub.unit)}"
    else:
        head = num(pub.value, pub.unit)
    if claim.condition is not None:
        cond = claim.condition.published
        head += f", loss ≤ {num(cond.value or 0.0, cond.unit)}"
    return head


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ").strip()


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub table with no padding: each row as wide as its own cells."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _slugger() -> Callable[[str], str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -, a repeat numbered."""
    used: dict[str, int] = {}

    def slug(heading: str) -> str:
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = used.get(base, 0)
        used[base] = n + 1
        return base if n == 0 else f"{base}-{n}"

    return slug


def _details(claim: Claim, rows: list[Line]) -> list[str]:
    """A claim's section: what it says, its source, published figure, comparison and rule once, then its rows."""
    facts = [("Source", claim.source), ("Published", published_text(claim)), ("Comparison", claim.comparison),
             ("Rule", rule_text(claim))]
    if claim.records is not None and claim.kind != "arch":
        facts.append(("Reads suites", ", ".join(claim.suites) or "(none)"))
    if claim.premises:
        facts.append(("Premises", "; ".join(claim.premises)))
    if claim.condition is not None:
        facts.append(("Condition", f"accuracy loss at most {claim.condition.bound:g} pts over the whole interval "
                                   f"({claim.condition.published.text})"))
    facts.append(("Verdict", _verdict_cell(rows)))
    table, said = [], ""
    for line in rows:   # a reason the row above gave word for word is not printed twice
        judged = f"{line.verdict}: {line.reason}"
        table.append([line.where, line.measured, "as above" if judged == said else judged])
        said = judged
    return [f"### {claim.id}", "", _cell(claim.claim), "",
            *[f"- {name}: {_cell(text)}" for name, text in facts], "",
            *_table(DETAIL_HEADERS, table), ""]


TITLE = "Replication: published claims beside our measurements"
SUMMARY = "Summary: one line per claim"
DETAILS = "Details by claim"


def markdown(lines: list[Line], suites: list[SuiteData]) -> str:
    """One file: the header (counts, verdicts, rules), a summary line per claim, then each claim's section with
    its rows. No timestamps: the same records give the same bytes."""
    return markdown_parts(lines, suites, None)[0]


def markdown_parts(lines: list[Line], suites: list[SuiteData], details_file: str | None) -> tuple[str, str]:
    """(summary, details): with `details_file`, the claims' sections go to that file and the summary links there,
    so the page a person opens first stays short; without it, one text holding both (and "" as the second)."""
    read = ", ".join(f"`{s.name}` ({len(s.records)} records)" for s in suites) or "none"
    claims = by_claim(lines)
    slug = _slugger()
    for heading in ((TITLE, SUMMARY, DETAILS) if details_file is None else (DETAILS,)):
        slug(heading)
    anchors = {cid: slug(cid) for cid in claims}
    target = details_file or ""
    summary = []
    for cid, rows in claims.items():
        claim, best = rows[0].claim, best_supported(rows)
        summary.append([f"[{cid}]({target}#{anchors[cid]})", _short_source(claim.source), _published_short(claim),
                        _value_cell(best), _place(best), _verdict_cell(rows), best.why or best.reason])
    details = [text for rows in claims.values() for text in _details(rows[0].claim, rows)]
    if details_file is not None:
        detail_text = "\n".join([f"# {DETAILS}", "", "Every row of every claim, grouped by claim: the detail behind "
                                 "the summary in `replication.md` (built with it by `slimbench replicate`).", "",
                                 *details]) + "\n"
        details = [f"Every claim's section, with each row it read, is in [{details_file}]({details_file})."]
    else:
        detail_text = ""
    head = "\n".join([
        f"# {TITLE}", "",
        f"Built by `slimbench replicate` from `configs/claims.yaml` and the run records of the suites under the "
        f"results folder: {read}. Each claim reads only the suites it names. The same records give the same file, "
        f"byte for byte.", "",
        summary_sentence(lines) + ".", "",
        "Verdicts (harness/replicate/claims.py `judge`), each read on the whole measured interval, never the mean "
        "alone:",
        f"- **{REPRODUCED}**: the whole interval satisfies the claim's rule. Never from one seed without a measured "
        "spread.",
        f"- **{INCONCLUSIVE}**: the interval straddles the rule's bound; the row says what would decide it (the n "
        "at which σ/√n, the same σ assumed, clears the bound; or, for a timing band, whether the effect lies inside "
        "the run-to-run spread).",
        f"- **{SMALLER}**: the whole interval lies short of the published size and clear of no effect in the "
        "claimed direction (1.8× does not reproduce a claim of 9×). A speed the leaderboard reads as ≈1.00× is "
        "never a smaller effect.",
        f"- **{NOT_REPRODUCED}**: the whole interval lies on the failing side (a loss beyond the bound, no effect or "
        "the opposite one, outside a count's band), or a second condition of the claim broken.",
        f"- **{NOT_TESTABLE}**: a premise of the claim is absent (no sparse, smaller or int8 kernel; a teacher not "
        "stronger than the student alone; a model at chance; no PTQ loss to recover; nothing compressed); the row "
        "names it.",
        f"- **{NEEDS_DATA}** / **{NEEDS_GPU}** / **{NEEDS_DATA_AND_GPU}**: the setting needs a dataset this machine "
        "does not embed, a GPU, or both; the row gives the command that measures it.",
        f"- *{NOT_MEASURED}* (no verdict): no record in the suites the claim names; the row gives the command.", "",
        "Rules (checked when `configs/claims.yaml` loads; a rule looser than its claim is rejected; each claim's "
        "section gives its numbers):",
        "- close to: the whole interval within a stated tolerance of the published value plus half a unit of its "
        f"last printed digit (\"3.4 M\" is 3.35–3.45 M), together at most {CLOSE_TO_CAP:.0%} of the value;",
        "- at least: the whole interval reaches the published effect less a stated share of it and half its last "
        f"digit (together at most {AT_LEAST_CAP:.0%} of the effect over no effect: 1× for a ratio, 0 for a "
        "difference);",
        "- loss at most, symmetric: reproduced if the largest loss in the interval is within the published loss, "
        "not reproduced if the smallest is beyond it;",
        "- direction only: the whole interval lies on the claimed side of no effect.", "",
        "Intervals, the leaderboard's noise model: accuracy values are mean ± σ over seeds (a Δ against the "
        "baseline: the wider of the paired Δ's σ and the baseline's; a pair A − B: the widest of the differences', "
        "A's and B's); one seed of an accuracy value is judged against ±2σ of its baseline's seeds; sizes from one "
        "seed have no measured spread. Speedups read the band over interleaved timing rounds widened by the "
        f"run-to-run spread (±{RUN_TO_RUN_SPEEDUP:.0%}, `stats.widened`), the band whose holding 1 makes the "
        "leaderboard print ≈1.00×. Architecture counts are measured now, exactly, on the model built at the paper's "
        "input size and class count; every other value comes from the run records its row names. Our budgets "
        "(minutes of CPU training on embedded datasets) are far smaller than the papers'.", "",
        f"## {SUMMARY}", "",
        "A claim's verdict is the verdict every one of its judged rows (reproduced, inconclusive, same direction "
        f"smaller effect, not reproduced) has; **{MIXED}** when they disagree, with the count of each; "
        f"{NOT_TESTABLE} when no row meets the claim's premises; rows not testable here are counted beside it but "
        "do not decide it. The value quoted is the claim's best-supported row: a judged row before one not testable "
        "here, then the most seeds, then the narrowest interval, then the first. Why: that row's reason, short; "
        "the claim's section has every row in full.", "",
        *_table(SUMMARY_HEADERS, summary), "",
        f"## {DETAILS}", "",
        *details,
    ])
    return (head + "\n" if details_file is not None else head), detail_text


def replication_markdown(claims: list[Claim], rows: list[LeaderboardRow], records: list[RunRecord]) -> str:
    """The table for one suite's rows and records (the claims that name that suite)."""
    suite = SuiteData(records[0].suite if records else "suite", rows, {r.run_id: r for r in records})
    return markdown(evaluate(claims, [suite]), [suite])


def replicate(results: Path, out: Path | None = None, claims_path: Path | None = None) -> list[Line]:
    """Evaluate every claim on the suites it names under `results`; write the table atomically to `out`."""
    suites = load_suites(results)
    lines = evaluate(load_claims(claims_path), suites)
    out = Path(out or Path(results) / "replication.md")
    details_path = out.with_name(out.stem + "_details" + out.suffix)
    summary, details = markdown_parts(lines, suites, details_path.name)
    atomic_write_text(details_path, details)
    atomic_write_text(out, summary)
    return lines
