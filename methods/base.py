"""The Method contract: a registered, parameterised transformation of a trained model."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import nn

from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import TrainedModel
from slimbench.core.errors import NotApplicableError
from slimbench.core.registry import Registry, parse_params
from slimbench.deploy.packing import Packed
from slimbench.tasks.base import MethodView

Compute = Literal["dense", "simulated", "physical"]

METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register

# Method families in the order reports list them; a family not named here sorts after these, by name.
FAMILIES: tuple[str, ...] = ("baseline", "pruning", "quantization", "distillation", "weight_sharing", "low_rank",
                             "token_merging", "chain", "peer")


def family_rank(family: str) -> tuple[int, str]:
    """Sort key of a family in reports: its place in FAMILIES, or after all of them."""
    return (FAMILIES.index(family), "") if family in FAMILIES else (len(FAMILIES), family)


@dataclass
class Outcome:
    """What a method produced, stated honestly.

    `compute` says what runs: "dense" (unchanged kernels), "simulated" (masks / fake-quant on dense kernels),
    "physical" (really smaller or int8 kernels). Whether storage shrank is measured by the harness from the
    packed representation, not claimed here.
    """

    model: nn.Module
    compute: Compute = "dense"
    requested: dict[str, Any] = field(default_factory=dict)
    achieved: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)   # e.g. fine-tune epochs, selected epoch
    packed: Packed | None = None     # stored form when it is not `pack_state_dict(model.state_dict())`
    runtime: str = "eager"           # where the model is deployed: accuracy and headline latency are measured there
    stages: list[Stage] = field(default_factory=list)   # a chain's intermediate results, each measured too


@dataclass
class Stage:
    """One step of a multi-stage method (a chain): its name, parameters and the model it left."""

    method: str
    params: dict[str, Any]
    outcome: Outcome


@dataclass(frozen=True)
class ReportTable:
    """A table a method adds under its suite's leaderboard, built from what its records hold (`Outcome.details`).

    Plain values in, plain rows out, so a method describes its own report section without importing the harness.
    The report prints `title` and `intro` once, then one table per task, model and parameter setting, from the
    lowest seed's record (the seeds share the setting; one table each would repeat it).
    """

    title: str
    intro: str
    headers: tuple[str, ...]
    rows: Callable[[dict[str, Any]], list[list[Any]]]     # a record's details -> table rows; none: no table for it
    summary: Callable[[dict[str, Any], dict[str, Any]], str] | None = None   # (details, metrics) -> a line above it


@dataclass
class MethodContext:
    """Everything a method may use besides the model: data, a fine-tune loop, a teacher, the budgets."""

    task: MethodView
    finetune: Callable[..., nn.Module]      # finetune(model, module=None, cfg=None) -> best-validation model
    teacher: Callable[[], TrainedModel]     # the suite's teacher, trained once per task and seed (cached)
    seed: int
    budget: TrainConfig                     # the suite's `finetune:` budget
    train_budget: TrainConfig               # the suite's `train:` budget (the baseline's, e.g. for KD from scratch)
    baseline: TrainedModel                  # the trained model this cell starts from (do not modify)
    fresh_model: Callable[[], nn.Module]    # an untrained model of the cell's architecture
    log: Callable[[dict[str, Any]], None] = lambda _metrics: None


class Method(abc.ABC):
    """Subclasses are dataclasses: their fields are the method's parameters, validated from the suite YAML."""

    family: ClassVar[str]
    # The next four are read from the instance: a class sets its default without an annotation (one would make it a
    # dataclass field), and an instance may set its own from its parameters (e.g. a chain from its stages).
    uses_finetune: bool = True    # does the suite's `finetune:` budget affect the result?
    uses_teacher: bool = False    # does the suite's `teacher:` affect the result?
    # What a method takes and leaves, so a chain can refuse an impossible order at parse time: "float" is a
    # trainable torch model; methods that export to a runtime graph (e.g. int8 ONNX) produce something else.
    consumes: frozenset[str] = frozenset({"float"})
    produces: str = "float"
    version: ClassVar[int] = 1              # bump when the method's behaviour changes: its results expire
    # Does the model's structure (parameters, multiply-adds, sparsity) depend on the trained weights, e.g. ranks
    # or channel counts chosen from them? Then two runs on different kernels may differ there like accuracy does.
    structure_from_data: ClassVar[bool] = False
    # The parameters that set how far it compresses: a sweep varies them, labels always show them, and every other
    # parameter names a sweep's curve.
    knobs: ClassVar[tuple[str, ...]] = ()
    # The method it must beat to show its criterion matters: a registered method with the same parameters that picks
    # without that criterion (e.g. random weights instead of the smallest). Reports pair their records by seed.
    control: ClassVar[str | None] = None
    report_tables: ClassVar[tuple[ReportTable, ...]] = ()   # sections of its own in the report, from its records
    # A model and parameters it runs with on a tiny test model (the contract tests run every method so); methods
    # whose defaults name layers of a particular architecture set their own.
    example: ClassVar[tuple[str, dict[str, Any]]] = ("tiny-cnn", {})

    def not_applicable(self, model: nn.Module) -> str | None:
        """Why this method cannot apply to `model`'s architecture at all, or None when it can.

        The harness asks before it trains the cell's baseline, so a cell that could never work is recorded as n/a
        with this reason instead of failing after the training it spent; a failed record then means something broke.
        Override it only where the architecture alone decides, with the same rule `apply` refuses by.
        """
        return None

    def require_applicable(self, model: nn.Module) -> None:
        """Raise NotApplicableError with `not_applicable`'s reason, so `apply` refuses by the very rule the harness
        asked before training."""
        reason = self.not_applicable(model)
        if reason:
            raise NotApplicableError(f"{getattr(self, 'name', type(self).__name__)}: {reason}")

    @abc.abstractmethod
    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        """Return the optimised model; `model` is a private copy the method may modify."""


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Instantiate a registered method; unknown or mistyped params are one ConfigError listing valid ones."""
    return parse_params(METHODS, name, params)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)
