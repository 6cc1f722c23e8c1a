"""The rules that decide whether our measurement reproduces a published claim (configs/claims.yaml), and the
verdicts they give (`judge`, `combine`). A claim's schema is `claim_schema`, the file is read by `claims_file`, the
verdict names and caps are `claim_terms`, and the tables word figures through `claim_text`.

Every verdict reads the whole measured interval (the seeds' spread, or the timing band the leaderboard reads), never
the mean alone. A rule may never be looser than its claim, so loading rejects one that is (a ConfigError naming the
claim):
- `close_to`: reproduced iff the whole interval lies within tolerance × |published| + half a unit of the published
  figure's last digit (`resolution`: "3.4 M" means 3.35–3.45 M); that band is at most 5 % of the published value.
- `at_least`: an effect of at least the published size, measured from `no_effect` (1 for a ratio, 0 for a
  difference): reproduced iff the whole interval reaches published − tolerance × |published − no_effect| − half a
  unit of its last digit (that allowance at most 10 % of the effect). A claim of 9× is not reproduced by 1.8×,
  whatever the budget: an interval wholly short of the threshold and wholly clear of `no_effect` is "same direction,
  smaller effect"; one short of the threshold that reaches `no_effect` is "not reproduced".
- `loss_at_most`: a loss (points) no larger than the published one, judged symmetrically: reproduced iff the
  largest loss in the interval is within the bound, not reproduced iff the smallest is beyond it; the bound is at most
  the published loss plus half a unit of its last digit.
- `ordering`: only the direction is claimed: reproduced iff the whole interval lies on the claimed side of
  `no_effect`, not reproduced iff it lies wholly on the other side (or at no effect).
An interval across the deciding bound is "inconclusive"; a row from one seed with no measured spread is
inconclusive at best (`judge`).

Premises (`requires`, `min_accuracy_over_chance`, `min_compressed_fraction`, `max_accuracy_loss`) make a row "not
testable here" before it is judged, naming the premise that is absent; `exclude_params` leaves rows out; `condition`
is a second figure the claim states beside its main one (Han's 9× is "without loss of accuracy"). A records claim
reads only the suites it names.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimbench.harness.replicate.claim_schema import Claim
from slimbench.harness.replicate.claim_terms import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, SMALLER
from slimbench.harness.replicate.claim_text import fmt, num, span


@dataclass
class Judgement:
    """A verdict, the reason in numbers, and for an inconclusive one the bound its interval straddles."""

    verdict: str
    reason: str
    bound: float | None = None


def side(low: float, high: float, bound: float, sign: int, strict: bool) -> str:
    """Where an interval lies against a bound, the claimed side being above it (sign +1) or below it (sign −1):
    "holds" — wholly on the claimed side (a strict claim excludes the bound itself); "fails" — wholly on the other
    side (the bound counting as the other side of a strict claim); "across" — on both."""
    lo, hi, b = (low, high, bound) if sign > 0 else (-high, -low, -bound)
    if (lo > b) if strict else (lo >= b):
        return "holds"
    if (hi <= b) if strict else (hi < b):
        return "fails"
    return "across"


def judge_loss(value: float, low: float, high: float, bound: float, unit: str = "pts") -> Judgement:
    """A loss at most `bound` (points), symmetric: every loss in the interval within the bound reproduces it, every
    loss beyond it does not, and an interval across it is inconclusive (the mean alone decides nothing)."""
    worst, least = -low, -high
    where = side(low, high, -bound, +1, strict=False)
    if where == "holds":
        if worst <= 0:
            return Judgement(REPRODUCED, f"no loss anywhere in the {span(low, high, unit)}")
        return Judgement(REPRODUCED, f"loss at most {worst:.2f} over the {span(low, high, unit)}, ≤ "
                                     f"{num(bound, unit)}")
    if where == "fails":
        return Judgement(NOT_REPRODUCED, f"loss at least {least:.2f} over the {span(low, high, unit)}, > "
                                         f"{num(bound, unit)}")
    return Judgement(INCONCLUSIVE, f"{fmt(value, unit)}: the {span(low, high, unit)} holds losses from "
                                   f"{max(least, 0.0):.2f} to {worst:.2f}, across the bound {num(bound, unit)}", -bound)


def judge(claim: Claim, value: float, low: float | None, high: float | None) -> Judgement:
    """The verdict from the whole measured interval (low, high): the seeds' spread, the timing band the leaderboard
    reads, or (low = high) an exact count. None: one seed and no spread to judge a difference by, inconclusive at
    best. Premises and conditions are the caller's (replication); this reads numbers only."""
    rule, pub, unit = claim.rule, claim.published, claim.published.unit
    shown = fmt(value, unit)
    if low is None or high is None:
        return Judgement(INCONCLUSIVE, f"{shown} from one seed with no measured spread: nothing tells it from noise "
                                       f"(≥ 2 seeds of the row measure one; for an accuracy, ≥ 2 of its baseline)")
    iv = span(low, high, unit) if high > low else ""
    if rule.test == "close_to":
        p = pub.value or 0.0
        band, diff = rule.band(pub), value - p
        off = f"{shown} is {diff:+.3g} ({diff / p:+.1%}) from {num(p, unit)}" + (f"; {iv}" if iv else "")
        if p - band <= low and high <= p + band:
            return Judgement(REPRODUCED, f"{off}, inside ±{num(band, unit)}")
        if high < p - band or low > p + band:
            null = rule.no_effect
            clear = null is not None and side(low, high, null, rule.sign(pub), True) == "holds"
            if clear and null is not None and rule.sign(pub) * diff < 0:
                return Judgement(SMALLER, f"{off}: beyond {num(null, unit)}, short of ±{num(band, unit)}")
            return Judgement(NOT_REPRODUCED, f"{off}, outside ±{num(band, unit)}")
        edge = p - band if abs(value - (p - band)) <= abs(value - (p + band)) else p + band
        return Judgement(INCONCLUSIVE, f"{off}: across the band's edge {num(edge, unit)}", edge)
    if rule.test == "loss_at_most":
        return judge_loss(value, low, high, rule.threshold(pub), unit)
    null, sign = rule.no_effect or 0.0, rule.sign(pub)
    where = f"{shown}" + (f", {iv}" if iv else "")
    if rule.test == "ordering":
        effect = side(low, high, null, sign, strict=True)
        if effect == "holds":
            return Judgement(REPRODUCED, f"{where}: wholly {'above' if sign > 0 else 'below'} {num(null, unit)}")
        if effect == "fails":
            what = "no effect" if low == high == null else "the opposite direction, beyond the spread"
            return Judgement(NOT_REPRODUCED, f"{where}: wholly at or {'below' if sign > 0 else 'above'} "
                                             f"{num(null, unit)}: {what}")
        return Judgement(INCONCLUSIVE, f"{where}: across {num(null, unit)}", null)
    target = rule.threshold(pub)
    cmp = "≥" if sign > 0 else "≤"
    reach = side(low, high, target, sign, strict=False)
    if reach == "holds":
        return Judgement(REPRODUCED, f"{where}: wholly {cmp} {num(target, unit)}")
    if reach == "across":
        return Judgement(INCONCLUSIVE, f"{where}: across the threshold {num(target, unit)}", target)
    effect = side(low, high, null, sign, strict=True)
    if effect == "holds":
        return Judgement(SMALLER, f"{where}: wholly clear of {num(null, unit)} but short of {num(target, unit)}")
    if effect == "fails":
        return Judgement(NOT_REPRODUCED, f"{where}: wholly at or {'below' if sign > 0 else 'above'} "
                                         f"{num(null, unit)}, short of {num(target, unit)}: no effect or the opposite")
    return Judgement(NOT_REPRODUCED, f"{where}: short of {num(target, unit)}, and across {num(null, unit)}: no "
                                     f"effect beyond the noise")


def combine(main: Judgement, conditions: list[tuple[str, Judgement]]) -> Judgement:
    """A claim with a second condition (an accuracy condition, Hinton's teacher ≥ distilled): a broken condition
    makes it not reproduced, an undecided one makes a reproduction inconclusive; each condition is quoted."""
    if not conditions:
        return main
    said = "; ".join(f"{name}: {j.verdict} ({j.reason})" for name, j in conditions)
    verdicts = {j.verdict for _, j in conditions}
    if NOT_REPRODUCED in verdicts and main.verdict in (REPRODUCED, SMALLER, INCONCLUSIVE):
        return Judgement(NOT_REPRODUCED, f"{main.reason}; but {said}")
    if INCONCLUSIVE in verdicts and main.verdict == REPRODUCED:
        bound = next(j.bound for _, j in conditions if j.verdict == INCONCLUSIVE)
        return Judgement(INCONCLUSIVE, f"{main.reason}; but {said}", bound)
    return Judgement(main.verdict, f"{main.reason}; {said}", main.bound)
