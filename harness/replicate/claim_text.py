"""How claims and measurements are worded in the replication tables: values, published figures, intervals and
rules with their numbers. One place, so a verdict's reason and the table around it print a figure alike.
"""

from __future__ import annotations

from slimbench.harness.replicate.claim_schema import Claim


def fmt(value: float, unit: str) -> str:
    """A measured value in its unit, as the table prints it."""
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "pts":
        return f"{value:+.2f} pts"
    return f"{value:,.4g} {unit}".rstrip()


def num(value: float, unit: str) -> str:
    """A published figure or a threshold, with as many digits as it has."""
    return f"{value:.3g}×" if unit == "×" else f"{value:.3g} {unit}".rstrip()


def published_text(claim: Claim) -> str:
    """The published cell: the figure (a loss for loss_at_most) and the text as the source prints it."""
    pub = claim.published
    if pub.value is None:
        head = "direction only"
    elif claim.rule.test == "loss_at_most":
        head = f"loss {num(pub.value, pub.unit)}"
    else:
        head = num(pub.value, pub.unit)
    text = f"{head} ({pub.text})"
    if claim.condition is not None:
        cond = claim.condition.published
        text += f"; with a loss of at most {num(cond.value or 0.0, cond.unit)} ({cond.text})"
    return text


def span(low: float, high: float, unit: str) -> str:
    """A measured interval, as the verdicts quote it."""
    if unit == "×":
        return f"interval {low:.2f}–{high:.2f}×"
    if unit == "pts":
        return f"interval {low:+.2f} to {high:+.2f} pts"
    return f"interval {low:,.4g}–{high:,.4g} {unit}".rstrip()


def rule_text(claim: Claim) -> str:
    """The rule with its numbers, as the table prints it."""
    rule, pub, unit = claim.rule, claim.published, claim.published.unit
    digit = " and half its last digit" if pub.resolution else ""
    if rule.test == "close_to":
        return (f"reproduced if the whole interval lies within ±{num(rule.band(pub), unit)} of "
                f"{num(pub.value or 0.0, unit)} ({rule.tolerance:.0%} of it{digit})")
    if rule.test == "at_least":
        cmp = "≥" if rule.sign(pub) > 0 else "≤"
        return (f"reproduced if the whole interval is {cmp} {num(rule.threshold(pub), unit)} (the published "
                f"{num(pub.value or 0.0, unit)} less {rule.tolerance:.0%} of its effect over "
                f"{num(rule.no_effect or 0.0, unit)}{digit}); smaller effect if wholly short of it and clear of "
                f"{num(rule.no_effect or 0.0, unit)}")
    if rule.test == "loss_at_most":
        return (f"reproduced if the largest loss in the interval is at most {num(rule.threshold(pub), unit)} (the "
                f"published loss{digit}); not reproduced if the smallest exceeds it")
    side_ = "above" if rule.direction == "higher" else "below"
    return f"direction only: reproduced if the whole interval lies {side_} {num(rule.no_effect or 0.0, unit)}"
