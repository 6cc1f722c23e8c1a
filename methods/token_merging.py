"""Token merging (ToMe, Bolya et al. 2023): fewer tokens in every later block, without training.

After each block's attention, the `r` most similar pairs of tokens (cosine similarity of their keys, bipartite
soft matching between alternate tokens) are averaged into one, weighted by how many inputs each already stands
for, and attention adds log(size) to its logits (proportional attention) so a merged token still counts as the
inputs it holds. The class token is never merged. Each block after the first sees `r` fewer tokens, so every
runtime runs fewer multiply-adds; the merge itself is a few gathers and a sort per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from slimbench.baselines.transformers import MergingBlock, SequenceEncoder
from slimbench.core.params import bounded, check_ranges
from slimbench.deploy.counting import count_macs
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.layer_inputs import hooked_pass


def merging_blocks(model: nn.Module) -> dict[str, MergingBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, MergingBlock)}


def tokens_per_block(model: nn.Module, example: torch.Tensor) -> list[int]:
    """How many tokens each transformer block receives on `example` (forward pre-hooks on the blocks' first norm)."""
    counts: list[int] = []
    handles = [block.norm1.register_forward_pre_hook(lambda _m, args: counts.append(int(args[0].shape[1])))
               for block in merging_blocks(model).values()]
    hooked_pass(model, handles, example)
    return counts


@register_method("tokens.merge")
@dataclass
class TokenMerging(Method):
    """ToMe: merge `r` tokens per transformer block by bipartite soft matching, training-free."""

    family: ClassVar[str] = "token_merging"
    name: ClassVar[str] = "tokens.merge"
    uses_finetune = False
    knobs: ClassVar[tuple[str, ...]] = ("r",)
    example: ClassVar[tuple[str, dict[str, Any]]] = ("vit", {"r": 1})

    r: int = bounded(4, ge=1)     # tokens merged away in each block (fewer when a block has fewer pairs to merge)

    def __post_init__(self) -> None:
        check_ranges(self, self.name)

    def not_applicable(self, model: nn.Module) -> str | None:
        if not merging_blocks(model):
            return f"{type(model).__name__} has no transformer blocks to merge tokens in (vit, kwt, text-encoder)"
        if any(isinstance(m, SequenceEncoder) and m.mask_padding for m in model.modules()):
            return ("its tokens are words pooled over the text only (padding masked): merged tokens would mix words "
                    "with padding and no longer map to positions")
        return None

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        example = ctx.task.example_input(1)
        before, macs_before = tokens_per_block(model, example), count_macs(model, example)
        for block in merging_blocks(model).values():
            block.set_merge(self.r)
        after, macs = tokens_per_block(model, example), count_macs(model, example)
        return Outcome(
            model,
            compute="physical",   # fewer tokens: every runtime runs fewer multiply-adds
            requested={"r": self.r},
            achieved={"macs_ratio": round(macs_before / macs, 4),
                      "token_ratio": round(sum(before) / sum(after), 4)},
            details={"tokens_per_block": {"before": before, "after": after}},
        )
