"""The claims registry (configs/claims.yaml): published results, each with its source, its published value and the
rule that decides whether our measurement reproduces it.

A rule may never be looser than its claim, so loading rejects one that is (a ConfigError naming the claim):
- `close_to`: reproduced iff |measured − published| ≤ tolerance × |published| + half a unit of the published
  figure's last digit (`resolution`: "3.4 M" means 3.35–3.45 M); that band is at most 5 % of the published value.
- `at_least`: an effect of at least the published size, measured from `no_effect` (1 for a ratio, 0 for a
  difference): reproduced iff the measured value reaches published − tolerance × |published − no_effect| − half a
  unit of its last digit (that allowance at most 10 % of the effect) and the measured interval clears
  `no_effect`. A claim of 9× is not reproduced by 1.8×, whatever the budget: 1.8× is "same direction, smaller
  effect".
- `loss_at_most`: a loss (points) no larger than the published one: reproduced iff −measured ≤ bound, and the bound
  is at most the published loss plus half a unit of its last digit.
- `ordering`: only the direction is claimed: reproduced iff the whole measured interval (the seeds' spread, or the
  timing band) lies on the claimed side of `no_effect`. A difference inside the spread is not a reproduction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from slimbench.core.errors import ConfigError
from slimbench.core.params import build_dataclass, load_yaml

REPRODUCED = "reproduced"
SMALLER = "same direction, smaller effect"
NOT_REPRODUCED = "not reproduced"
NEEDS_FULL_SCALE = "needs GPU or data not embedded"
NOT_MEASURED = "not measured"          # not a verdict: no record yet; the table names the command that makes one
VERDICTS = (REPRODUCED, SMALLER, NOT_REPRODUCED, NEEDS_FULL_SCALE)

CLOSE_TO_CAP = 0.05                    # close_to: the band is at most 5 % of the published value
AT_LEAST_CAP = 0.10                    # at_least: the allowance is at most 10 % of the published effect

# values a records claim can measure; per-record ones can also be paired (A − B, seed by seed)
PER_RECORD = ("compression_x", "gzip_x", "macs_x", "accuracy_pts", "delta_accuracy_pts", "delta_macro_f1_pts",
              "delta_vs_teacher_pts", "corrupted_accuracy_pts", "corrupted_minus_clean_pts")
# paired only, and only against a baseline: the worst class's Δ beyond the overall Δ, less the same figure between
# two baseline seeds (Hooker et al.'s "the damage is concentrated in a few classes", net of retraining's churn)
PAIRED_ONLY = ("worst_class_excess_pts",)
ROW_VALUES = ("speedup_b1_x", "macs_x_over_speedup_b1")
NOISY = ("accuracy_pts", "delta_accuracy_pts", "delta_macro_f1_pts", "delta_vs_teacher_pts", "corrupted_accuracy_pts",
         "corrupted_minus_clean_pts", "worst_class_excess_pts")   # carry the seeds' spread


@dataclass
class Published:
    """The published figure: a number in `unit`, the text as the source prints it, the unit of its last digit."""

    value: float | None = None         # None only for an ordering the source states without a figure
    unit: str = ""
    text: str = ""
    resolution: float = 0.0

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ConfigError("text is required: the figure as the source prints it")
        if self.value is None:
            if self.resolution:
                raise ConfigError("resolution needs a published value")
            return
        limit = abs(self.value) / 10 if self.value else 0.1
        if not 0 <= self.resolution <= limit:
            raise ConfigError(f"resolution {self.resolution:g} must be between 0 and {limit:g} (a figure "
                              f"of at least two significant digits; 0.1 for a published 0)")

    @property
    def half_digit(self) -> float:
        return self.resolution / 2


@dataclass
class Rule:
    """How the verdict is decided; see the module docstring for the exact rules and their caps."""

    test: Literal["close_to", "at_least", "loss_at_most", "ordering"]
    tolerance: float = 0.0
    no_effect: float | None = None
    direction: Literal["higher", "lower"] | None = None
    bound: float | None = None

    def sign(self, published: Published) -> int:
        """+1 if the claimed effect raises the value above `no_effect`, −1 if it lowers it."""
        if self.test == "ordering":
            return 1 if self.direction == "higher" else -1
        return 1 if (published.value or 0) >= (self.no_effect or 0) else -1

    def threshold(self, published: Published) -> float:
        """at_least: the value the measurement must reach; loss_at_most: the largest loss allowed (points)."""
        p = published.value or 0.0
        if self.test == "at_least":
            assert self.no_effect is not None
            return p - self.sign(published) * (self.tolerance * abs(p - self.no_effect) + published.half_digit)
        if self.test == "loss_at_most":
            return self.bound if self.bound is not None else p + published.half_digit
        raise ValueError(self.test)

    def band(self, published: Published) -> float:
        """close_to: the largest |measured − published| that still reproduces the figure."""
        return self.tolerance * abs(published.value or 0.0) + published.half_digit

    def validate(self, pub: Published) -> None:
        unused = {"tolerance": self.tolerance if self.test not in ("close_to", "at_least") else 0,
                  "direction": self.direction if self.test != "ordering" else None,
                  "bound": self.bound if self.test != "loss_at_most" else None}
        extra = [k for k, v in unused.items() if v]
        if extra:
            raise ConfigError(f"rule {self.test} does not use {', '.join(extra)}")
        if self.tolerance < 0:
            raise ConfigError(f"tolerance must be ≥ 0, got {self.tolerance:g}")
        if self.test == "ordering":
            if self.direction is None:
                raise ConfigError("an ordering rule needs direction: higher or lower")
            if pub.value is not None and self.sign(pub) * (pub.value - (self.no_effect or 0.0)) <= 0:
                raise ConfigError(f"the published value {pub.value:g} is not {self.direction} than "
                                  f"{self.no_effect or 0:g}: the rule contradicts its own source")
            return
        if pub.value is None:
            raise ConfigError(f"rule {self.test} compares with the published value: give published.value")
        unit, p = pub.unit, pub.value
        if self.test == "close_to" and self.band(pub) > CLOSE_TO_CAP * abs(p) + 1e-12:
            raise ConfigError(
                f"tolerance {self.tolerance:.0%} is looser than the claim allows: 'reproduced' would accept "
                f"{p - self.band(pub):.4g}–{p + self.band(pub):.4g} {unit} for a published {p:g} {unit}; the "
                f"tolerance plus half the figure's last digit may be at most {CLOSE_TO_CAP:.0%} of it")
        if self.test == "at_least":
            if self.no_effect is None or self.no_effect == p:
                raise ConfigError("an at_least rule needs no_effect (1 for a ratio, 0 for a difference) "
                                  "different from the published value")
            effect = abs(p - self.no_effect)
            if abs(p - self.threshold(pub)) > AT_LEAST_CAP * effect + 1e-12:
                capped = p - self.sign(pub) * AT_LEAST_CAP * effect
                raise ConfigError(
                    f"tolerance {self.tolerance:.0%} is looser than the claim allows: 'reproduced' would accept "
                    f"{self.threshold(pub):.4g} {unit} for a published {p:g} {unit}; the tolerance plus half the "
                    f"figure's last digit may be at most {AT_LEAST_CAP:.0%} of the published effect over "
                    f"{self.no_effect:g} ({'≥' if self.sign(pub) > 0 else '≤'} {capped:.4g} {unit})")
        if self.test == "loss_at_most" and self.bound is not None and self.bound > p + pub.half_digit:
            raise ConfigError(f"bound {self.bound:g} {unit} is looser than the published {p:g} {unit}: a loss "
                              f"bound may be at most the published loss (+ half its last digit)")


@dataclass
class Selector:
    """Leaderboard rows a claim is measured on: shell-style patterns, `params` a subset of the method's params."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    task: str = "*"
    model: str = "*"


@dataclass
class Versus:
    """The second row of a pair (same suite, task and model; `same_params` must be equal in both)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    same_params: list[str] = field(default_factory=list)


@dataclass
class Records:
    """A value read from run records: one row, or two rows paired seed by seed (where − versus)."""

    value: str
    where: Selector
    versus: Versus | None = None
    premise: Literal["versus_loses_accuracy"] | None = None   # the claim speaks only of rows where B loses accuracy
    teacher_not_below: bool = False                            # Hinton's ordering: teacher ≥ distilled

    def __post_init__(self) -> None:
        if self.value not in PER_RECORD + ROW_VALUES + PAIRED_ONLY:
            raise ConfigError(f"records.value {self.value!r} is not one of "
                              f"{', '.join(PER_RECORD + ROW_VALUES + PAIRED_ONLY)}")
        self.where = build_dataclass(Selector, self.where, "records.where")
        if self.versus is not None:
            self.versus = build_dataclass(Versus, self.versus, "records.versus")
            if self.value not in PER_RECORD + PAIRED_ONLY:
                raise ConfigError(f"records.value {self.value!r} cannot be paired; pairs take "
                                  f"{', '.join(PER_RECORD + PAIRED_ONLY)}")
        if self.value in PAIRED_ONLY and (self.versus is None or self.versus.method != "baseline"):
            raise ConfigError(f"records.value {self.value!r} is measured against the baseline: give versus: "
                              f"{{method: baseline}}")
        if self.premise and self.versus is None:
            raise ConfigError("records.premise versus_loses_accuracy needs a versus row")
        if self.teacher_not_below and self.value != "delta_accuracy_pts":
            raise ConfigError("records.teacher_not_below goes with value delta_accuracy_pts (the distilled gain)")


@dataclass
class Arch:
    """A count measured now on the model built at the paper's input size and class count."""

    model: str
    params: dict[str, Any] = field(default_factory=dict)
    count: Literal["params", "macs"] = "params"
    input: list[int] = field(default_factory=lambda: [3, 224, 224])
    classes: int = 1000
    divide_by: float = 1.0           # into the published unit (1e6 for "M")
    ratio_of: float | None = None    # a published figure divided by our count (AlexNet's 61 M over SqueezeNet's)
    ratio_text: str = ""
    over: dict[str, Any] | None = None   # {model, params}: our count divided by this model's (SqueezeNet 1.0 / 1.1)

    def __post_init__(self) -> None:
        if len(self.input) != 3:
            raise ConfigError(f"arch.input is [channels, height, width], got {self.input}")
        if self.ratio_of is not None and not self.ratio_text:
            raise ConfigError("arch.ratio_text must say where the published figure in ratio_of comes from")
        if self.over is not None and (set(self.over) - {"model", "params"} or "model" not in self.over):
            raise ConfigError(f"arch.over is {{model, params}}, got {self.over}")
        if self.over is not None and self.ratio_of is not None:
            raise ConfigError("arch: give ratio_of or over, not both")


@dataclass
class Claim:
    id: str
    claim: str
    published: Published
    comparison: str                  # what is compared with what, in words
    rule: Rule
    kind: Literal["arch", "records", "full-scale"]
    source: str = ""                 # paper or repository + table or section; required
    arch: Arch | None = None
    records: Records | None = None
    suites: list[str] = field(default_factory=list)   # suites whose records measure it (their command when none exist)
    needs: str = ""                  # full-scale: what this machine does not have (data, GPU)
    command: str = ""                # full-scale: the command that measures it

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source is required: the paper or repository, with its table or section")
        self.published = build_dataclass(Published, self.published, "published")
        self.rule = build_dataclass(Rule, self.rule, "rule")
        self.rule.validate(self.published)
        if self.arch is not None:
            self.arch = build_dataclass(Arch, self.arch, "arch")
        if self.records is not None:
            self.records = build_dataclass(Records, self.records, "records")
        if self.kind == "arch" and self.arch is None:
            raise ConfigError("an arch claim needs arch: {model, count, ...}")
        if self.kind == "records" and (self.records is None or not self.suites):
            raise ConfigError("a records claim needs records: {value, where} and suites: [the suites that run it]")
        if self.kind == "full-scale" and not (self.needs and self.command):
            raise ConfigError("a full-scale claim needs `needs` (what is not embedded) and `command` (what runs it)")
        if self.records is not None and self.records.value in NOISY and self.rule.test == "close_to":
            raise ConfigError("an accuracy is judged by at_least, loss_at_most or ordering, not close_to")


def shipped_suite_names() -> set[str]:
    folder = resources.files("slimbench.configs")
    return {p.name.removesuffix(".yaml") for p in folder.iterdir()
            if p.name.endswith(".yaml") and p.name != "claims.yaml"}


def parse_claims(raw: Any, where: str) -> list[Claim]:
    """Validated claims from the YAML document; every error names the claim and what is wrong with it."""
    entries = (raw or {}).get("claims") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a top-level `claims:` list")
    suites = shipped_suite_names()
    claims: list[Claim] = []
    for i, entry in enumerate(entries):
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"{where}: claim {name!r}" if name else f"{where}: claim #{i + 1}"
        claim = build_dataclass(Claim, entry, label)
        unknown = [s for s in claim.suites if s not in suites]
        if unknown:
            raise ConfigError(f"{label}: unknown suite(s) {', '.join(unknown)}; shipped: {', '.join(sorted(suites))}")
        if any(c.id == claim.id for c in claims):
            raise ConfigError(f"{label}: id is used twice")
        claims.append(claim)
    return claims


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims registry: shipped with the package (importlib.resources), or a file given explicitly."""
    source = path if path is not None else resources.files("slimbench.configs") / "claims.yaml"
    where = f"claims file {path or 'configs/claims.yaml'}"
    if not source.is_file():
        raise ConfigError(f"claims file {source} does not exist")
    try:
        raw = load_yaml(source.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    return parse_claims(raw, where)


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
    return f"{head} ({pub.text})"


def rule_text(claim: Claim) -> str:
    """The rule with its numbers, as the table prints it."""
    rule, pub, unit = claim.rule, claim.published, claim.published.unit
    digit = " and half its last digit" if pub.resolution else ""
    if rule.test == "close_to":
        return (f"reproduced if within ±{num(rule.band(pub), unit)} of {num(pub.value or 0.0, unit)} "
                f"({rule.tolerance:.0%} of it{digit})")
    if rule.test == "at_least":
        cmp = "≥" if rule.sign(pub) > 0 else "≤"
        return (f"reproduced if {cmp} {num(rule.threshold(pub), unit)} (the published {num(pub.value or 0.0, unit)} "
                f"less {rule.tolerance:.0%} of its effect over {num(rule.no_effect or 0.0, unit)}{digit}), with the "
                f"interval clear of {num(rule.no_effect or 0.0, unit)}")
    if rule.test == "loss_at_most":
        return f"reproduced if the loss is at most {num(rule.threshold(pub), unit)} (the published loss{digit})"
    side = "above" if rule.direction == "higher" else "below"
    return f"direction only: reproduced if the whole interval lies {side} {num(rule.no_effect or 0.0, unit)}"


def judge(claim: Claim, value: float, low: float | None, high: float | None,
          violations: list[str]) -> tuple[str, str]:
    """The verdict and the reason in numbers. (low, high) is the measured interval: the seeds' spread or the timing
    band; None when one seed gives no spread to judge a difference against."""
    rule, pub, unit = claim.rule, claim.published, claim.published.unit
    shown = fmt(value, unit)
    if violations:
        return NOT_REPRODUCED, "; ".join(violations)
    if rule.test == "close_to":
        p, diff = pub.value or 0.0, value - (pub.value or 0.0)
        off = f"{shown} is {diff:+.3g} ({diff / p:+.1%}) from {num(p, unit)}"
        if abs(diff) <= rule.band(pub):
            return REPRODUCED, f"{off}, inside ±{num(rule.band(pub), unit)}"
        if rule.no_effect is not None and _clears(rule.no_effect, rule.sign(pub), low, high) \
                and rule.sign(pub) * diff < 0:
            return SMALLER, f"{off}: beyond {num(rule.no_effect, unit)}, short of ±{num(rule.band(pub), unit)}"
        return NOT_REPRODUCED, f"{off}, outside ±{num(rule.band(pub), unit)}"
    if rule.test == "loss_at_most":
        loss, bound = -value, rule.threshold(pub)
        if loss <= bound:
            return REPRODUCED, f"loss {loss:.2f} ≤ {num(bound, unit)}" if loss > 0 else f"no loss ({shown})"
        noise = " (the excess is inside the seed spread)" if high is not None and -high <= bound else ""
        return NOT_REPRODUCED, f"loss {loss:.2f} > {num(bound, unit)}{noise}"
    null, sign = rule.no_effect or 0.0, rule.sign(pub)
    clears = _clears(null, sign, low, high)
    if low is None or high is None:
        why_not = f"{shown} with no spread or timing band to tell it from noise"
    elif low <= null <= high:
        why_not = f"{shown} is inside the spread around {num(null, unit)}"
    else:
        why_not = f"{shown}: the opposite direction, beyond the spread"
    if rule.test == "ordering":
        side = "above" if sign > 0 else "below"
        return (REPRODUCED, f"{shown}, interval {side} {num(null, unit)}") if clears else (NOT_REPRODUCED, why_not)
    target = rule.threshold(pub)
    if clears and sign * (value - target) >= 0:
        return REPRODUCED, f"{shown} {'≥' if sign > 0 else '≤'} {num(target, unit)}"
    if clears:
        return SMALLER, f"{shown} clears {num(null, unit)} but falls short of {num(target, unit)}"
    return NOT_REPRODUCED, why_not


def _clears(null: float, sign: int, low: float | None, high: float | None) -> bool:
    """The whole interval lies on the claimed side of `null`."""
    if low is None or high is None:
        return False
    return low > null if sign > 0 else high < null
