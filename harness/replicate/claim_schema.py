"""The schema of a configs/claims.yaml entry: the published figure, its rule, what a claim measures (records,
architecture counts, or full-scale needs) and its premises. Each dataclass validates itself when built, so a claim
that is malformed, or a rule looser than its claim allows, is a ConfigError before anything is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from slimbench.core.errors import ConfigError
from slimbench.core.params import build_dataclass
from slimbench.harness.replicate.claim_terms import (
    AT_LEAST_CAP,
    CLOSE_TO_CAP,
    COMPUTE_REQUIREMENTS,
    NEEDS_DATA,
    NEEDS_DATA_AND_GPU,
    NEEDS_GPU,
    NOISY,
    PAIRED_ONLY,
    PER_RECORD,
    ROW_VALUES,
)

D = TypeVar("D")


def _built(cls: type[D], raw: object, where: str) -> D:
    """A nested field built as `cls`: a claim arrives from YAML with each nested dataclass still its mapping, which
    the enclosing `__post_init__` builds (and validates) here."""
    return build_dataclass(cls, cast("Mapping[str, Any] | None", raw), where)


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
    """How the verdict is decided; harness/replicate/claims.py says the exact rules and their caps."""

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
    teacher_not_below: bool = False                            # Hinton's ordering: teacher ≥ distilled

    def __post_init__(self) -> None:
        if self.value not in PER_RECORD + ROW_VALUES + PAIRED_ONLY:
            raise ConfigError(f"records.value {self.value!r} is not one of "
                              f"{', '.join(PER_RECORD + ROW_VALUES + PAIRED_ONLY)}")
        self.where = _built(Selector, self.where, "records.where")
        if self.versus is not None:
            self.versus = _built(Versus, self.versus, "records.versus")
            if self.value not in PER_RECORD + PAIRED_ONLY:
                raise ConfigError(f"records.value {self.value!r} cannot be paired; pairs take "
                                  f"{', '.join(PER_RECORD + PAIRED_ONLY)}")
        if self.value in PAIRED_ONLY and (self.versus is None or self.versus.method != "baseline"):
            raise ConfigError(f"records.value {self.value!r} is measured against the baseline: give versus: "
                              f"{{method: baseline}}")
        if self.teacher_not_below and self.value != "delta_accuracy_pts":
            raise ConfigError("records.teacher_not_below goes with value delta_accuracy_pts (the distilled gain)")


@dataclass
class Requires:
    """Premises a row must show before it is judged; a row without one is "not testable here", saying which.

    - compute: the row's measured compute label (records' `compression.compute`, harness/measure/evidence.py) must show
      kernels of this kind: physical-sparse (a sparse or smaller kernel: masked dense kernels cannot be faster),
      smaller-dense (fewer multiply-adds executed), int8 (int8 kernels);
    - teacher_stronger: the teacher's accuracy interval lies above the student-alone's (and the teacher is not the
      student's own architecture: born-again rows are not testable);
    - ptq_lost: the versus row (post-training quantization) loses accuracy against its baseline beyond the spread.
    """

    compute: str | None = None
    teacher_stronger: bool = False
    ptq_lost: bool = False

    def __post_init__(self) -> None:
        if self.compute is not None and self.compute not in COMPUTE_REQUIREMENTS:
            raise ConfigError(f"compute must be one of {', '.join(COMPUTE_REQUIREMENTS)}, got "
                              f"{self.compute!r}")


@dataclass
class Condition:
    """A second figure the claim states beside its main one, measured on the same row against its baseline and
    judged like `loss_at_most` (symmetric): e.g. Han et al.'s 9× fewer connections "without loss of accuracy"."""

    published: Published
    value: Literal["delta_accuracy_pts", "delta_macro_f1_pts"] = "delta_accuracy_pts"

    def __post_init__(self) -> None:
        self.published = _built(Published, self.published, "condition.published")
        if self.published.value is None or self.published.value < 0:
            raise ConfigError("condition.published.value is the loss (points) the source allows, ≥ 0")

    @property
    def bound(self) -> float:
        """The largest loss (points) that still meets the condition."""
        return (self.published.value or 0.0) + self.published.half_digit


@dataclass
class Needs:
    """What a full-scale claim needs that this machine does not have: a dataset, a GPU, or both (say what)."""

    data: str = ""
    gpu: str = ""

    def __post_init__(self) -> None:
        if not (self.data.strip() or self.gpu.strip()):
            raise ConfigError("needs: give data (the dataset not embedded) and/or gpu (the work a CPU cannot do)")

    @property
    def verdict(self) -> str:
        if self.data and self.gpu:
            return NEEDS_DATA_AND_GPU
        return NEEDS_DATA if self.data else NEEDS_GPU

    @property
    def text(self) -> str:
        return "; ".join(p for p in (f"data: {self.data}" if self.data else "",
                                     f"GPU: {self.gpu}" if self.gpu else "") if p)


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
    comparison: str                  # what is compared with what, in words (the paper's own measure)
    rule: Rule
    kind: Literal["arch", "records", "full-scale"]
    source: str = ""                 # paper or repository + table or section; required
    arch: Arch | None = None
    records: Records | None = None
    suites: list[str] = field(default_factory=list)   # the only suites whose records measure it
    needs: Needs | None = None       # full-scale: what this machine does not have (data, GPU, or both)
    command: str = ""                # full-scale: the command that measures it
    # premises and filters, checked before judgement (records only)
    requires: Requires | None = None
    min_accuracy_over_chance: float | None = None   # points: the row's model or its baseline within this of chance
    min_compressed_fraction: float | None = None    # share of the baseline's non-zero parameters removed
    # points: a claim about models whose accuracy holds reads no row that lost more than this beyond the seed spread
    max_accuracy_loss: float | None = None
    exclude_params: dict[str, Any] = field(default_factory=dict)   # rows with these params are left out
    condition: Condition | None = None

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("source is required: the paper or repository, with its table or section")
        self.published = _built(Published, self.published, "published")
        self.rule = _built(Rule, self.rule, "rule")
        self.rule.validate(self.published)
        if self.arch is not None:
            self.arch = _built(Arch, self.arch, "arch")
        if self.records is not None:
            self.records = _built(Records, self.records, "records")
        if self.needs is not None:
            self.needs = _built(Needs, self.needs, "needs")
        if self.requires is not None:
            self.requires = _built(Requires, self.requires, "requires")
        if self.condition is not None:
            self.condition = _built(Condition, self.condition, "condition")
        if self.kind == "arch" and self.arch is None:
            raise ConfigError("an arch claim needs arch: {model, count, ...}")
        if self.kind == "records" and self.records is None:
            raise ConfigError("a records claim needs records: {value, where}")
        if self.kind == "records" and not self.suites:
            raise ConfigError("a records claim needs suites: [the suites whose records measure it]; a claim reads "
                              "no suite it does not name")
        if self.kind == "full-scale" and not (self.needs and self.command):
            raise ConfigError("a full-scale claim needs `needs` ({data: ..., gpu: ...}: what is not here) and "
                              "`command` (what runs it)")
        if self.kind != "full-scale" and self.needs is not None:
            raise ConfigError("needs goes with kind: full-scale")
        if self.records is not None and self.records.value in NOISY and self.rule.test == "close_to":
            raise ConfigError("an accuracy is judged by at_least, loss_at_most or ordering, not close_to")
        self._check_premises()

    def _check_premises(self) -> None:
        given = [k for k, v in (("requires", self.requires),
                                ("min_accuracy_over_chance", self.min_accuracy_over_chance),
                                ("min_compressed_fraction", self.min_compressed_fraction),
                                ("max_accuracy_loss", self.max_accuracy_loss is not None),
                                ("exclude_params", self.exclude_params), ("condition", self.condition)) if v]
        if given and self.records is None:
            raise ConfigError(f"{', '.join(given)} check records rows: this claim has no records")
        if self.min_accuracy_over_chance is not None and not 0 < self.min_accuracy_over_chance < 100:
            raise ConfigError(f"min_accuracy_over_chance is in points, between 0 and 100, got "
                              f"{self.min_accuracy_over_chance:g}")
        if self.max_accuracy_loss is not None and not 0 <= self.max_accuracy_loss < 100:
            raise ConfigError(f"max_accuracy_loss is in points, between 0 and 100, got {self.max_accuracy_loss:g}")
        if self.min_compressed_fraction is not None and not 0 < self.min_compressed_fraction < 1:
            raise ConfigError(f"min_compressed_fraction is a share of the baseline's non-zero parameters, between 0 "
                              f"and 1, got {self.min_compressed_fraction:g}")
        if self.requires is not None and self.records is not None:
            if self.requires.ptq_lost and self.records.versus is None:
                raise ConfigError("requires.ptq_lost reads the versus row (the post-training quantized model): give "
                                  "records.versus")
            if self.requires.compute and self.records.value not in ROW_VALUES:
                raise ConfigError(f"requires.compute is a premise of a speed claim ({', '.join(ROW_VALUES)}), not of "
                                  f"{self.records.value}")

    @property
    def premises(self) -> list[str]:
        """The premises checked before judgement, in words (the table's comparison cell lists them)."""
        out = []
        req = self.requires
        if req is not None and req.compute:
            out.append(f"{req.compute} compute kernels")
        if req is not None and req.teacher_stronger:
            out.append("a teacher stronger than the student alone (not born-again)")
        if req is not None and req.ptq_lost:
            out.append("post-training quantization loses accuracy beyond the spread")
        if self.min_accuracy_over_chance is not None:
            out.append(f"the row's model and its baseline > {self.min_accuracy_over_chance:g} pts above chance")
        if self.min_compressed_fraction is not None:
            out.append(f"≥ {self.min_compressed_fraction:.0%} of the baseline's non-zero parameters removed")
        if self.max_accuracy_loss is not None:
            out.append(f"accuracy kept: the row loses at most {self.max_accuracy_loss:g} pts beyond the seed spread")
        if self.exclude_params:
            out.append("rows with " + ", ".join(f"{k}={v}" for k, v in self.exclude_params.items()) + " left out")
        return out
