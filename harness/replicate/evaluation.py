"""Each claim of configs/claims.yaml measured where it says (`evaluate`): on the rows it selects in the suites it
names (and no other), or on the model built at the paper's input size (architecture claims), or marked as needing
data and/or a GPU this machine does not have. One `Line` per place, with its verdict (`verdict`: absent premises
first, then the claim's rule from harness/replicate/claims.py, then its second conditions); a claim's overall verdict
(`claim_verdict`), its best-supported row (`best_supported`) and the counts that head the table (`summary_sentence`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

from slimbench.harness.replicate.claim_schema import Claim, Selector
from slimbench.harness.replicate.claim_terms import (
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
from slimbench.harness.replicate.claim_text import fmt
from slimbench.harness.replicate.claims import Judgement, combine, judge
from slimbench.harness.replicate.measurements import (
    Measurement,
    SuiteData,
    excluded,
    matches,
    measured_by,
    pair,
    single,
    to_decide,
)
from slimbench.harness.replicate.premises import check_premises, judge_conditions
from slimbench.harness.report.stats import short_params

__all__ = ["Line", "evaluate", "verdict", "by_claim", "claim_verdict", "best_supported", "verdict_counts",
           "claim_counts", "summary_sentence", "MIXED"]


@dataclass
class Line:
    """One row of the table: a claim measured in one place (or not measured, with the command that would)."""

    claim: Claim
    measured: str
    where: str
    verdict: str
    reason: str
    # the numbers the summary reads (none for a claim not measured here)
    value: float | None = None
    low: float | None = None
    high: float | None = None
    seeds: int = 0
    noise: str = "none"
    why: str = ""                    # the reason, short: the main rule's finding (and a failing condition)


def _rows(claim: Claim, suite: SuiteData) -> list[Measurement]:
    spec = claim.records
    assert spec is not None
    sel: Selector = spec.where
    out = []
    for a in (r for r in suite.rows if matches(r, sel.method, sel.params, sel.task, sel.model)):
        if not measured_by(spec.value, a, suite) or excluded(a, claim.exclude_params):
            continue
        if spec.versus is None:
            m = single(spec.value, a, suite)
            check_premises(claim, m, a, None, suite)
            judge_conditions(claim, m, a, suite)
            out.append(m)
            continue
        va = json.loads(a.params_json)
        for b in suite.rows:
            same = all(json.loads(b.params_json).get(k) == va.get(k) for k in spec.versus.same_params)
            if b is not a and (b.task, b.model) == (a.task, a.model) and same and \
                    matches(b, spec.versus.method, spec.versus.params) and measured_by(spec.value, b, suite) \
                    and not excluded(b, claim.exclude_params):
                paired_m = pair(claim, a, b, suite)
                if paired_m is not None:
                    check_premises(claim, paired_m, a, b, suite)
                    judge_conditions(claim, paired_m, a, suite)
                    out.append(paired_m)
    return out


# -- architecture counts, measured now ----------------------------------------------------------------------------

@functools.cache
def _count(model: str, params_json: str, shape: tuple[int, int, int], classes: int, what: str) -> int:
    import torch

    from slimbench.baselines import build_model
    from slimbench.deploy.counting import count_macs, count_params
    from slimbench.tasks import InputSpec

    built = build_model(model, InputSpec(*shape), classes, json.loads(params_json) or None)
    if what == "params":
        return count_params(built)[0]
    return count_macs(built, torch.zeros(1, *shape))


def _arch(claim: Claim) -> Measurement:
    a = claim.arch
    assert a is not None
    c, h, w = a.input
    n = _count(a.model, json.dumps(a.params, sort_keys=True), (c, h, w), a.classes, a.count)
    what = "parameters" if a.count == "params" else "multiply-adds"
    where = (f"measured now on the model built at {h}² ({c}×{h}×{w} input, {a.classes} classes): "
             + _model_text(a.model, a.params))
    if a.over is not None:
        d = _count(a.over["model"], json.dumps(a.over.get("params", {}), sort_keys=True), (c, h, w), a.classes,
                   a.count)
        where += " ÷ " + _model_text(a.over["model"], a.over.get("params", {}))
        return Measurement(n / d, n / d, n / d, f"({n:,} ÷ {d:,} {what})", where, noise="exact")
    value = a.ratio_of / n if a.ratio_of is not None else n / a.divide_by
    if a.ratio_of is not None:
        where = f"{a.ratio_text} ÷ our count, {where}"
    return Measurement(value, value, value, f"({n:,} {what})", where, noise="exact")


def _model_text(model: str, params: dict[str, Any]) -> str:
    given = short_params(json.dumps(params))
    return model + (f" ({given})" if given else "")


# -- a claim's rows and their verdicts ------------------------------------------------------------------------

def _command(claim: Claim) -> str:
    return " or ".join(f"`slimbench run configs/{s}.yaml`" for s in claim.suites)


def verdict(claim: Claim, m: Measurement) -> Judgement:
    """A measured row's verdict: an absent premise first (not testable here, naming it), then the rule on the whole
    interval, then the claim's second conditions; an inconclusive row says what would decide it."""
    if m.not_testable:
        return Judgement(NOT_TESTABLE, "; ".join(m.not_testable))
    main = judge(claim, m.value, m.low, m.high)
    if main.verdict == INCONCLUSIVE and main.bound is not None:
        main.reason += to_decide(m, main.bound, claim.published.unit)
    return combine(main, m.conditions)


def evaluate(claims: list[Claim], suites: list[SuiteData]) -> list[Line]:
    """Every claim, in file order: one line per place it is measured in the suites it names, or one saying why
    it is not."""
    lines: list[Line] = []
    for claim in claims:
        if claim.kind == "arch":
            found = [_arch(claim)]
        elif claim.records is not None:
            found = [m for s in suites if s.name in claim.suites for m in _rows(claim, s)]
        else:
            found = []
        for m in found:
            j = verdict(claim, m)
            measured = " · ".join([f"{fmt(m.value, claim.published.unit)}{_value_word(claim)} {m.spread}", *m.beside])
            lines.append(Line(claim, measured, m.where, j.verdict, j.reason, m.value, m.low, m.high, m.seeds,
                              m.noise, _why(claim, m)))
        if found:
            continue
        if claim.kind == "full-scale":
            assert claim.needs is not None
            lines.append(Line(claim, "—", f"not run here: needs {claim.needs.text}", claim.needs.verdict,
                              f"measure it with {claim.command}", why=f"measure it with {claim.command}"))
        else:
            lines.append(Line(claim, "—", "no record in the suites it names (" + ", ".join(claim.suites) + ") yet",
                              NOT_MEASURED, f"run {_command(claim)}", why=f"run {_command(claim)}"))
    return lines


def _why(claim: Claim, m: Measurement) -> str:
    """The reason, short (the summary's cell): the first absent premise, or the main rule's finding on the interval,
    with any second condition that did not hold; the detail row keeps the whole reason."""
    if m.not_testable:
        more = len(m.not_testable) - 1
        return m.not_testable[0] + (f" (and {more} more premise{'s' * (more > 1)} absent)" if more else "")
    why = judge(claim, m.value, m.low, m.high).reason
    failed = [f"{name}: {j.verdict}" for name, j in m.conditions if j.verdict != REPRODUCED]
    return why + (f"; but {'; '.join(failed)}" if failed else "")


def _value_word(claim: Claim) -> str:
    """What a ratio counts, where the unit alone does not say it (the paper's own measure)."""
    spec = claim.records
    words = {"connections_x": " fewer connections", "compression_x": " smaller stored", "gzip_x": " smaller gzipped",
             "macs_x": " fewer MACs"}
    return words.get(spec.value, "") if spec is not None else ""


ORDER = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED, NOT_TESTABLE, NEEDS_DATA, NEEDS_GPU, NEEDS_DATA_AND_GPU,
         NOT_MEASURED)
JUDGED = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED)   # what the claim's rule says of a measured row
MIXED = "mixed"                # a claim whose judged rows disagree (its cell gives the counts)
CLAIM_ORDER = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED, MIXED, NOT_TESTABLE, NEEDS_DATA, NEEDS_GPU,
               NEEDS_DATA_AND_GPU, NOT_MEASURED)


def by_claim(lines: list[Line]) -> dict[str, list[Line]]:
    """Each claim's rows, claims in the order of their first row (the claims file's order)."""
    out: dict[str, list[Line]] = {}
    for line in lines:
        out.setdefault(line.claim.id, []).append(line)
    return out


def claim_verdict(rows: list[Line]) -> str:
    """A claim's overall verdict, from its rows (rows judged by the claim's rule: reproduced, inconclusive, same
    direction smaller effect, not reproduced):
    - the verdict every judged row has, when they agree (rows "not testable here" are counted in the cell, but do
      not decide it);
    - "mixed" when the judged rows disagree (the cell gives the count of each verdict);
    - "not testable here" when every row lacks a premise;
    - else the claim's one row's: needs data / needs GPU / needs data and GPU, or not measured."""
    judged = sorted({line.verdict for line in rows if line.verdict in JUDGED})
    if len(judged) == 1:
        return judged[0]
    if judged:
        return MIXED
    if all(line.verdict == NOT_TESTABLE for line in rows):
        return NOT_TESTABLE
    return rows[0].verdict


def best_supported(rows: list[Line]) -> Line:
    """The row a claim's summary quotes: a judged row before one not testable here, then the most seeds, then the
    narrowest interval (an exact count is 0 wide; a row with no interval comes last), then the first in file order."""
    def key(item: tuple[int, Line]) -> tuple[bool, int, float, int]:
        i, line = item
        width = line.high - line.low if line.low is not None and line.high is not None else math.inf
        return line.verdict not in JUDGED, -line.seeds, width, i

    return min(enumerate(rows), key=key)[1]


def verdict_counts(lines: list[Line]) -> dict[str, int]:
    """Rows per verdict, every verdict listed (0 where none), in the table's order."""
    return {v: sum(line.verdict == v for line in lines) for v in ORDER}


def claim_counts(lines: list[Line]) -> dict[str, int]:
    """Claims per overall verdict (`claim_verdict`), every one listed, in the table's order."""
    overall = [claim_verdict(rows) for rows in by_claim(lines).values()]
    return {v: overall.count(v) for v in CLAIM_ORDER}


def summary_sentence(lines: list[Line]) -> str:
    """The counts that head the file and that `slimbench replicate` prints: claims, rows, rows per verdict, claims
    per overall verdict (no final full stop)."""
    rows = ", ".join(f"{n} {v}" for v, n in verdict_counts(lines).items())
    claims = ", ".join(f"{n} {v}" for v, n in claim_counts(lines).items())
    return f"{len(by_claim(lines))} claims, {len(lines)} rows: {rows}; claims by overall verdict: {claims}"
