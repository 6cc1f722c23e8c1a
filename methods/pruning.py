"""Pruning methods. Unstructured magnitude pruning masks weights (torch.nn.utils.prune)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn.utils import prune

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.methods.base import Method, MethodContext, Outcome, register_method

PRUNABLE = (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Embedding)


def prunable_weights(model: nn.Module, include_classifier: bool = True) -> list[tuple[nn.Module, str]]:
    """Every (module, "weight") of conv / linear / embedding layers, in model order."""
    pairs = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
    if not include_classifier and pairs and isinstance(pairs[-1][0], nn.Linear):
        pairs = pairs[:-1]
    return pairs


def weight_sparsity(pairs: list[tuple[nn.Module, str]]) -> float:
    total = sum(getattr(m, n).numel() for m, n in pairs)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in pairs)
    return zeros / max(total, 1)


@register_method("prune.magnitude")
@dataclass
class MagnitudePruning(Method):
    """Unstructured L1-magnitude pruning (global or per layer) to a target sparsity, then fine-tuning."""

    family: ClassVar[str] = "pruning"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    include_classifier: bool = True
    finetune: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"prune.magnitude: sparsity must be in [0, 1), got {self.sparsity}")

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        pairs = prunable_weights(model, self.include_classifier)
        if not pairs:
            raise NotApplicableError(
                f"prune.magnitude needs Conv/Linear/Embedding layers; {type(model).__name__} has none"
            )
        if self.scope == "global":
            prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=self.sparsity)
        else:
            for module, name in pairs:
                prune.l1_unstructured(module, name, amount=self.sparsity)
        if self.finetune:
            model = ctx.finetune(model)  # masks stay applied: pruned weights stay zero while training
        for module, name in pairs:
            prune.remove(module, name)  # bake the mask in: a plain state dict whose zeros are real
        achieved = weight_sparsity(pairs)
        names = {id(m): n for n, m in model.named_modules()}
        empty = [names[id(m)] for m, n in pairs if not getattr(m, n).any()]  # a fully pruned layer blocks the signal
        with torch.no_grad():
            total = sum(p.numel() for p in model.parameters())
            zeros = sum(int((p == 0).sum()) for p in model.parameters())
        return Outcome(
            model,
            compute="simulated",  # zeros in dense tensors: dense kernels run unchanged
            requested={"sparsity": self.sparsity},
            achieved={"sparsity": round(achieved, 6), "model_sparsity": round(zeros / total, 6)},
            details={"empty_layers": empty},
        )
