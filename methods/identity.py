"""The reference cell: the trained baseline, unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from slimbench.methods.base import Method, MethodContext, Outcome, register_method


@register_method("baseline")
@dataclass
class Baseline(Method):
    """The trained model as is: the reference every ratio is taken against."""

    family: ClassVar[str] = "baseline"
    uses_finetune = False

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        return Outcome(model, compute="dense")
