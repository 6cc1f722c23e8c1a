"""Structured attention-head pruning (Michel et al. 2019, "Are Sixteen Heads Really Better than One?").

Each head's importance is measured on calibration batches from the training split, normalised within its layer
(their eq. 2 and §4.2: a layer's scores by their ℓ2 norm, so one global ranking compares layers fairly), and the
least important heads are removed everywhere at once, each layer keeping at least one. Removal is physical: the
head's rows of `qkv` and its columns of `proj` are cut, so the attention runs with fewer heads, fewer
multiply-adds and smaller weights, in every runtime. The model is then fine-tuned with the suite's budget.

Two importance criteria: `gradient`, Michel et al.'s |∂L/∂ξ_h| for a gate ξ_h = 1 on the head's output, and
`output_norm`, the size of each head's contribution to the layer's output (no labels, no backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from slimbench.baselines.transformers import HeadAttention, MergingBlock
from slimbench.core.params import bounded, check_ranges
from slimbench.deploy.counting import count_macs
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.layer_inputs import hooked_eval, hooked_pass

Importance = Literal["gradient", "output_norm"]


def attention_layers(model: nn.Module) -> dict[str, HeadAttention]:
    """The attention layers whose heads can be cut: slimbench's `HeadAttention` with plain `Linear` projections."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, HeadAttention) and type(m.qkv) is nn.Linear and type(m.proj) is nn.Linear}


def head_scores(model: nn.Module, loader: DataLoader, criterion: Importance) -> dict[str, torch.Tensor]:
    """Importance of every head of every attention layer, summed over the loader's batches (model in eval mode)."""
    layers = attention_layers(model)
    gates = {name: torch.ones(m.num_heads, requires_grad=criterion == "gradient") for name, m in layers.items()}
    scores = {name: torch.zeros(m.num_heads, dtype=torch.float64) for name, m in layers.items()}

    def hook(name: str, attn: HeadAttention):  # noqa: ANN202
        def gate_heads(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            heads = args[0].unflatten(-1, (attn.num_heads, attn.head_dim))        # [B, N, H, head_dim]
            if criterion == "output_norm":
                with torch.no_grad():   # each head's share of proj's output: its columns times its context
                    weight = attn.proj.weight.unflatten(1, (attn.num_heads, attn.head_dim))   # [dim, H, hd]
                    parts = torch.einsum("bnhd,ohd->bnho", heads, weight)
                    scores[name] += parts.norm(dim=-1).mean(dim=(0, 1)).double()
            return ((heads * gates[name][:, None].to(heads.dtype)).flatten(-2),)
        return gate_heads

    handles = [m.proj.register_forward_pre_hook(hook(name, m)) for name, m in layers.items()]
    with hooked_eval(model, handles):
        for x, y in loader:
            if criterion == "gradient":
                with torch.enable_grad():
                    loss = F.cross_entropy(model(x), y)
                    grads = torch.autograd.grad(loss, list(gates.values()))
                for name, g in zip(gates, grads):
                    scores[name] += g.abs().double()
            else:
                with torch.no_grad():
                    model(x)
    return scores


def heads_to_remove(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, list[int]]:
    """round(fraction · all heads) heads with the lowest layer-normalised scores; each layer keeps its best head."""
    normalised = {name: s / s.norm().clamp_min(1e-30) for name, s in scores.items()}
    candidates = []
    for name, s in normalised.items():
        best = int(s.argmax())
        candidates += [(float(v), name, h) for h, v in enumerate(s.tolist()) if h != best]
    total = sum(len(s) for s in scores.values())
    count = min(round(fraction * total), len(candidates))
    out: dict[str, list[int]] = {name: [] for name in scores}
    for _, name, head in sorted(candidates)[:count]:
        out[name].append(head)
    return {name: sorted(heads) for name, heads in out.items()}


def _sliced(layer: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    weight = layer.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            assert new.bias is not None
            new.bias.copy_(layer.bias.detach()[rows] if rows is not None else layer.bias.detach())
    return new


def remove_heads(attn: HeadAttention, heads: list[int]) -> None:
    """Cut `heads` out of `qkv` (their query, key and value rows) and `proj` (their input columns).

    A slice of two Linear layers whose layout is known: simpler than torch-pruning's dependency graph, which
    would also need the head count as a constructor attribute to rewrite.
    """
    if not heads:
        return
    h, hd = attn.num_heads, attn.head_dim
    keep = torch.tensor([i for i in range(h) if i not in set(heads)])
    per_head = (keep[:, None] * hd + torch.arange(hd)[None, :]).flatten()            # columns of kept heads
    rows = torch.cat([part * h * hd + per_head for part in range(3)])                # q, k and v blocks
    attn.qkv = _sliced(attn.qkv, rows=rows)
    attn.proj = _sliced(attn.proj, cols=per_head)


def attention_weights(model: nn.Module) -> int:
    """Weights of the attention projections (qkv and proj): their multiply-adds per token, which removing heads cuts."""
    return sum(m.qkv.weight.numel() + m.proj.weight.numel() for m in attention_layers(model).values())


def attention_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of the attention layers alone (qkv, QKᵀ, AV, proj) on `example`: each layer counted on the
    tokens it really receives (its block's normalised input, captured in one forward pass)."""
    layers = attention_layers(model)
    blocks = {id(m.attn): m for m in model.modules() if isinstance(m, MergingBlock)}
    inputs: dict[str, torch.Tensor] = {}

    def capture(name: str):  # noqa: ANN202
        return lambda _m, _args, out: inputs.__setitem__(name, out.detach())

    handles = [blocks[id(m)].norm1.register_forward_hook(capture(name)) for name, m in layers.items()
               if id(m) in blocks]
    hooked_pass(model, handles, example)
    return sum(count_macs(layers[name], x) for name, x in inputs.items())


@register_method("prune.heads")
@dataclass
class HeadPruning(Method):
    """Remove the least important attention heads (Michel et al. 2019), physically; fine-tune."""

    family: ClassVar[str] = "pruning"
    name: ClassVar[str] = "prune.heads"
    knobs: ClassVar[tuple[str, ...]] = ("fraction",)
    structure_from_data: ClassVar[bool] = True      # which heads go depends on the trained weights
    example: ClassVar[tuple[str, dict[str, Any]]] = ("vit", {"fraction": 0.5})

    fraction: float = bounded(0.5, gt=0.0, lt=1.0)   # of all heads in the model, removed by one global ranking
    importance: Importance = "gradient"
    calibration_samples: int = bounded(512, ge=1)    # training examples the importance is measured on
    finetune: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, self.name)

    def not_applicable(self, model: nn.Module) -> str | None:
        layers = attention_layers(model)
        if not layers:
            return (f"{type(model).__name__} has no attention layer whose heads can be removed (slimbench's "
                    f"transformers: vit, kwt, text-encoder)")
        if all(m.num_heads < 2 for m in layers.values()):
            return "every attention layer has a single head: removing one would remove the layer"
        return None

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        example = ctx.task.example_input(1)
        macs_before, params_before = count_macs(model, example), sum(p.numel() for p in model.parameters())
        attn_before, attn_macs_before = attention_weights(model), attention_macs(model, example)
        heads_before = {name: m.num_heads for name, m in attention_layers(model).items()}
        scores = head_scores(model, ctx.task.calibration_dataloader(self.calibration_samples), self.importance)
        removed = heads_to_remove(scores, self.fraction)
        layers = attention_layers(model)
        for name, heads in removed.items():
            remove_heads(layers[name], heads)
        if self.finetune:
            model = ctx.finetune(model)
        model.eval()
        heads_after = {name: m.num_heads for name, m in attention_layers(model).items()}
        macs, params = count_macs(model, example), sum(p.numel() for p in model.parameters())
        return Outcome(
            model,
            compute="physical",   # fewer heads: narrower qkv and proj, smaller attention maps in every runtime
            requested={"fraction": self.fraction},
            achieved={"heads_removed": round(1 - sum(heads_after.values()) / sum(heads_before.values()), 4),
                      "macs_ratio": round(macs_before / macs, 4), "params_ratio": round(params_before / params, 4),
                      "attention_weights_ratio": round(attn_before / attention_weights(model), 4),
                      "attention_macs_ratio": round(attn_macs_before / attention_macs(model, example), 4)},
            details={"importance": self.importance, "calibration_samples": self.calibration_samples,
                     "heads": {name: [heads_after[name], heads_before[name]] for name in heads_before},
                     "removed": {name: heads for name, heads in removed.items() if heads},
                     "scores": {name: [round(v, 6) for v in s.tolist()] for name, s in scores.items()}},
        )
