"""Fewer time steps for a recurrent model: average every `stride` frames (speech) or words (text) before a trained
GRU's recurrence, then fine-tune. Each step of a recurrence waits for the one before it, so the number of steps, not
the width, sets its latency: this is the recurrent counterpart of token merging (Arik et al. 2017 stride the frames
of their keyword-spotting GRU for the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from slimbench.baselines.transformers import RecurrentFeatures, step_pool
from slimbench.core.params import bounded, check_ranges
from slimbench.deploy.counting import count_macs
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.layer_inputs import hooked_pass


def recurrences(model: nn.Module) -> dict[str, RecurrentFeatures]:
    return {name: m for name, m in model.named_modules() if isinstance(m, RecurrentFeatures)}


def recurrent_steps(model: nn.Module, example: torch.Tensor) -> list[int]:
    """The sequence length each recurrent layer runs over for `example` (forward pre-hooks on the GRUs)."""
    steps: list[int] = []
    handles = [m.gru.register_forward_pre_hook(lambda _m, args: steps.append(int(args[0].shape[1])))
               for m in recurrences(model).values()]
    hooked_pass(model, handles, example)
    return steps


@register_method("steps.pool")
@dataclass
class StepPooling(Method):
    """Average every `stride` time steps before a trained GRU's recurrence, then fine-tune: stride× fewer steps."""

    family: ClassVar[str] = "token_merging"
    name: ClassVar[str] = "steps.pool"
    knobs: ClassVar[tuple[str, ...]] = ("stride",)
    example: ClassVar[tuple[str, dict[str, Any]]] = ("gru", {"stride": 2})

    stride: int = bounded(2, ge=2)      # steps averaged into one
    finetune: bool = True               # fine-tune the GRU on the averaged steps

    def __post_init__(self) -> None:
        check_ranges(self, self.name)
        self.uses_finetune = self.finetune

    def not_applicable(self, model: nn.Module) -> str | None:
        found = recurrences(model)
        if not found:
            return f"{type(model).__name__} has no recurrence whose time steps could be averaged (gru)"
        pooled = [name for name, m in found.items() if not isinstance(m.pool, nn.Identity)]
        if pooled:
            return f"its recurrence already averages time steps ({', '.join(pooled)}: a model trained strided)"
        return None

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        example = ctx.task.example_input(1)
        steps_before, macs_before = recurrent_steps(model, example), count_macs(model, example)
        for layer in recurrences(model).values():
            layer.pool = step_pool(self.stride)   # parameter-free: what a model built with `stride` has
        if self.finetune:
            model = ctx.finetune(model)
        steps, macs = recurrent_steps(model, example), count_macs(model, example)
        return Outcome(
            model,
            compute="physical",   # fewer steps: every runtime runs fewer sequential multiply-adds
            requested={"stride": self.stride},
            achieved={"macs_ratio": round(macs_before / macs, 4),
                      "step_ratio": round(sum(steps_before) / sum(steps), 4)},
            details={"steps": {"before": steps_before, "after": steps}, "finetuned": self.finetune},
        )
