"""The Method contract: a registered, parameterised transformation of a trained model."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import nn

from baselines.classifier import TrainConfig
from harness.registry import Registry, parse_params
from tasks.base import Task

Compute = Literal["dense", "simulated", "physical"]

METHODS: Registry[type["Method"]] = Registry("method")
register_method = METHODS.register


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


@dataclass
class MethodContext:
    """Everything a method may use besides the model: data, a fine-tune loop, a teacher, the budget."""

    task: Task
    finetune: Callable[..., nn.Module]      # finetune(model, module=None, cfg=None) -> best-val model
    teacher: Callable[[], nn.Module]        # a trained, cached teacher for this task
    seed: int
    budget: TrainConfig                     # the suite's `finetune:` budget
    baseline: nn.Module | None = None       # the trained model before this method (read-only)
    log: Callable[[dict[str, Any]], None] = lambda _metrics: None


class Method(abc.ABC):
    """Subclasses are dataclasses: their fields are the method's parameters, validated from the suite YAML."""

    family: ClassVar[str]

    @abc.abstractmethod
    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        """Return the optimised model; `model` is a private copy the method may modify."""


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Instantiate a registered method; unknown or mistyped params are one ConfigError listing valid ones."""
    return parse_params(METHODS, name, params)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)
