"""SmoothQuant (Xiao et al. 2022): move activation outliers into the weights, then W8A8 int8.

Transformer activations have a few input channels far larger than the rest, so a per-tensor int8 activation scale
spends its range on them. SmoothQuant divides each input channel j of a Linear layer by
s_j = max|X_j|^α / max|W_j|^(1-α) (X: calibration inputs, W: the weights reading channel j) and multiplies the
weights' column j by s_j: the product is unchanged, activations become flatter, weights take a little of their
range. The division is folded into the LayerNorm that produces X (its weight and bias), so the smoothed float
model computes the same function with the same layers; Linear layers with no LayerNorm directly before them are
left as they are and listed. The smoothed model then goes through quant.ptq_int8's static int8 path (ONNX Runtime
QDQ, per-tensor activations calibrated on the same training samples), so a comparison with quant.ptq_int8 on the
same settings isolates the smoothing.

Written here rather than taken from torchao.prototype.smoothquant, which keeps the division as a run-time
multiplication of its own Linear wrapper for torchao's kernels instead of folding it into the LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from slimbench.core.errors import NotApplicableError
from slimbench.core.params import bounded
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.layer_inputs import calibration_batches, collect, hooked_pass
from slimbench.methods.quantization import StaticInt8Params, int8_outcome, static_int8


def norm_consumers(model: nn.Module, example: torch.Tensor) -> dict[str, list[str]]:
    """Affine LayerNorms whose output goes, as the very same tensor, straight into Linear layers (and nowhere else
    in a module): name → the Linear layers' names. Found by one forward pass with hooks."""
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) and m.elementwise_affine
             and m.weight is not None and m.bias is not None}
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: dict[str, list[str]] = {}
    handles = [m.register_forward_hook(lambda _m, _a, out, n=n: outputs.__setitem__(id(out), (n, out)))
               for n, m in norms.items()]

    def reads(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            source = outputs.get(id(args[0]))
            if source is not None and source[1] is args[0] and name not in pairs.setdefault(source[0], []):
                pairs[source[0]].append(name)
        return hook

    handles += [m.register_forward_pre_hook(reads(n)) for n, m in linears.items()]
    hooked_pass(model, handles, example)
    return pairs


@torch.no_grad()
def smooth(norm: nn.LayerNorm, layers: list[nn.Linear], act_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fold s = max|X|^α / max|W|^(1-α) into `norm` (÷ s) and the `layers`' input columns (× s); returns s."""
    weight_max = torch.stack([m.weight.abs().amax(dim=0) for m in layers]).amax(dim=0).clamp(min=1e-5)
    s = (act_max.clamp(min=1e-5).pow(alpha) / weight_max.pow(1 - alpha)).clamp(min=1e-5)
    assert norm.weight is not None and norm.bias is not None   # norm_consumers picks affine norms
    norm.weight.div_(s)
    norm.bias.div_(s)
    for m in layers:
        m.weight.mul_(s[None, :])
    return s


@register_method("quant.smoothquant")
@dataclass
class SmoothQuant(StaticInt8Params, Method):
    """SmoothQuant: per-channel smoothing folded into the LayerNorms, then static W8A8 int8 (ONNX Runtime QDQ)."""

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "quant.smoothquant"
    uses_finetune = False
    produces = "onnx-int8"
    knobs: ClassVar[tuple[str, ...]] = ("alpha",)
    example: ClassVar[tuple[str, dict[str, Any]]] = ("vit", {"calibration_samples": 64})

    alpha: float = bounded(0.5, ge=0.0, le=1.0)     # migration strength; the paper's default 0.5

    def not_applicable(self, model: nn.Module) -> str | None:
        has_norm = any(isinstance(m, nn.LayerNorm) and m.elementwise_affine for m in model.modules())
        if has_norm and any(isinstance(m, nn.Linear) for m in model.modules()):
            return None
        return (f"{type(model).__name__} has no affine LayerNorm feeding Linear layers: SmoothQuant folds its "
                f"smoothing into them (transformers)")

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        example = ctx.task.example_input(2)
        pairs = norm_consumers(model, example)
        if not pairs:
            raise NotApplicableError(f"{self.name}: no LayerNorm of {type(model).__name__} feeds a Linear layer "
                                     f"directly; nothing to smooth into")
        norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
        linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        consumers = {name: linears[name] for names in pairs.values() for name in names}
        stats = collect(model, consumers, calibration_batches(ctx, self.calibration_samples))
        scales = {}
        for norm, names in pairs.items():
            s = smooth(norms[norm], [linears[n] for n in names], stats[names[0]].abs_max, self.alpha)
            scales[norm] = {"linears": names, "s_min": round(float(s.min()), 6), "s_max": round(float(s.max()), 6),
                            "act_outlier_ratio": round(float(stats[names[0]].abs_max.max()
                                                             / stats[names[0]].abs_max.median().clamp(min=1e-12)), 4)}
        smoothed = set(consumers)
        left = sorted(n for n in linears if n not in smoothed)
        onnx_model, info = static_int8(model.eval(), ctx.task, self, self.name)
        info["smoothing"] = {"alpha": self.alpha, "folded_into": scales, "unsmoothed_linears": left}
        return int8_outcome(onnx_model, info, {"weight_bits": 8, "alpha": self.alpha, "observer": self.observer,
                                                "calibration_samples": self.calibration_samples})
