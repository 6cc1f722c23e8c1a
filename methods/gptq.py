"""Weight-only 4- and 8-bit quantization of Linear layers: GPTQ (Frantar et al. 2022) and round-to-nearest, its control.

Both quantize each row of a weight in blocks of `group_size` inputs (one scale and zero point per block, asymmetric
min-max grid) and deploy in ONNX Runtime's `MatMulNBits` kernel, which reads the packed codes (deploy/matmul_nbits.py),
so the stored size and the latency are those of the packed model. They differ only in how codes are chosen:
- `quant.rtn` rounds every weight to its nearest grid point;
- `quant.gptq` quantizes the inputs one at a time and moves each one's rounding error onto the inputs not yet
  quantized, weighted by the inverse Hessian H = 2XᵀX of the layer's calibration inputs (the paper's Algorithm 1:
  Cholesky form of H⁻¹, lazy batches of 128 columns, 1 % dampening), minimising ‖XWᵀ − XŴᵀ‖² per layer. Layers go in
  forward order, each on the inputs the already-quantized layers produce.
Written here because the maintained implementations run on CUDA only (torchao.prototype.gptq asserts a CUDA device;
AutoGPTQ and GPTQModel target CUDA LLM kernels); the algorithm is forty lines of torch.

Each record carries both solvers' layer reconstruction errors on the calibration inputs, so GPTQ's gain over
round-to-nearest is visible per layer, beside the accuracy both reach (round-to-nearest reads the calibration
inputs only for that figure; its codes do not depend on them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import onnx
import torch
from torch import nn

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import bounded, check_ranges
from slimbench.deploy.matmul_nbits import BlockQuantized, nbits_weights, to_matmul_nbits
from slimbench.deploy.onnx_export import OnnxModel, export_onnx, initializer_arrays, kernel_precisions
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.layer_inputs import InputStats, calibration_batches, linear_layers, sequential

LAZY_BATCH = 128   # columns updated together before the error is pushed to the rest (the paper's B)


def grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric min-max grid of each row of `w` (a block of inputs): scale and integer zero point per row; the
    range always holds 0, so a zero weight stays exactly zero."""
    lo, hi = w.min(dim=1).values.clamp(max=0), w.max(dim=1).values.clamp(min=0)
    flat = (hi - lo) == 0
    lo, hi = torch.where(flat, -1.0, lo), torch.where(flat, 1.0, hi)
    scale = (hi - lo) / (2 ** bits - 1)
    return scale, torch.round(-lo / scale)


def to_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale[:, None]) + zero[:, None], 0, 2 ** bits - 1)


def rtn(weight: torch.Tensor, bits: int, group: int) -> BlockQuantized:
    """Round-to-nearest on each block's min-max grid."""
    w = weight.detach().float()
    codes, scales, zeros = torch.empty_like(w), [], []
    for start in range(0, w.shape[1], group):
        scale, zero = grid(w[:, start:start + group], bits)
        codes[:, start:start + group] = to_codes(w[:, start:start + group], scale, zero, bits)
        scales.append(scale)
        zeros.append(zero)
    return BlockQuantized(codes.to(torch.uint8), torch.stack(scales, 1), torch.stack(zeros, 1).to(torch.uint8),
                          bits, group)


def gptq(weight: torch.Tensor, xtx: torch.Tensor, bits: int, group: int, damp: float) -> BlockQuantized:
    """GPTQ's Algorithm 1 with grouping: each block's grid is set from its weights as updated when it is reached."""
    w = weight.detach().double().clone()
    h = xtx.double().clone()
    n, k = w.shape
    dead = torch.diag(h) == 0                    # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    scales, zeros = [], []
    lazy = group * math.ceil(LAZY_BATCH / group)   # whole groups per lazy batch
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        w1, err1, h1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1, dtype=w.dtype), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if i % group == 0:
                scale, zero = grid(w1[:, i:i + group], bits)
                scales.append(scale)
                zeros.append(zero)
            q = to_codes(w1[:, i:i + 1], scale, zero, bits)[:, 0]
            codes[:, i1 + i] = q.to(torch.uint8)
            err = (w1[:, i] - (q - zero) * scale) / h1[i, i]
            w1[:, i:] -= err[:, None] * h1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return BlockQuantized(codes, torch.stack(scales, 1).float(), torch.stack(zeros, 1).to(torch.uint8), bits, group)


def reconstruction_error(weight: torch.Tensor, q: BlockQuantized, xtx: torch.Tensor) -> float:
    """‖XWᵀ − XŴᵀ‖² over the calibration rows, from the Gram matrix: tr(ΔW XᵀX ΔWᵀ)."""
    delta = weight.detach().double() - q.dequantize().double()
    return float(torch.einsum("nk,kl,nl->", delta, xtx.double(), delta))


def stored_weight_bits(graph: bytes) -> dict[str, Any]:
    """Bits per weight element of the graph's weights as stored: packed codes with their scales and zero points for
    MatMulNBits weights, each initializer's own dtype for the others (weights: initializers of two or more dims)."""
    arrays = initializer_arrays(graph)
    nbits = nbits_weights(onnx.load_from_string(graph).graph)
    side = {name for w in nbits.values() for name in (w.scales, w.zero_points) if name}
    packed_weights = sum(w.k * w.n for w in nbits.values())
    packed_bits = sum(8 * sum(arrays[p].nbytes for p in (w.b, w.scales, w.zero_points) if p) for w in nbits.values())
    other = [a for name, a in arrays.items() if a.ndim >= 2 and name not in nbits and name not in side]
    weights = packed_weights + sum(a.size for a in other)
    bits = packed_bits + sum(8 * a.nbytes for a in other)
    return {"weight_bits": round(bits / max(weights, 1), 4),
            "packed_weight_fraction": round(packed_weights / max(weights, 1), 6),
            "packed_bits_per_weight": round(packed_bits / max(packed_weights, 1), 4)}


@dataclass
class WeightOnlyQuantization(Method):
    """What GPTQ and round-to-nearest share: the grid, the layers, the calibration, the MatMulNBits deployment."""

    family: ClassVar[str] = "quantization"
    name: ClassVar[str]
    solver: ClassVar[str]
    uses_finetune = False
    produces = "onnx-weight-only"
    knobs: ClassVar[tuple[str, ...]] = ("bits", "group_size")
    example: ClassVar[tuple[str, dict[str, Any]]] = ("vit", {"calibration_samples": 64})

    bits: int = 4
    group_size: int = 32                  # inputs per scale and zero point: a power of two, at least 16 (the kernel's)
    damp: float = bounded(0.01, gt=0.0, lt=1.0)     # GPTQ: dampening, a fraction of H's mean diagonal
    calibration_samples: int = bounded(128, ge=1)   # training examples the layer inputs are collected on
    include_classifier: bool = False      # the paper keeps the output layer in floating point

    def __post_init__(self) -> None:
        check_ranges(self, self.name)
        if self.bits not in (4, 8):
            raise ConfigError(f"{self.name}: bits must be 4 or 8 (the widths MatMulNBits runs on this CPU), got "
                              f"{self.bits}")
        if self.group_size < 16 or self.group_size & (self.group_size - 1):
            raise ConfigError(f"{self.name}: group_size must be a power of two of at least 16 (MatMulNBits' block "
                              f"sizes), got {self.group_size}")

    def not_applicable(self, model: nn.Module) -> str | None:
        if linear_layers(model, self.include_classifier):
            return None
        where = "" if self.include_classifier else " besides its classifier"
        return (f"{type(model).__name__} has no nn.Linear layer{where}: weight-only int{self.bits} deploys Linear "
                f"layers as ONNX Runtime's MatMulNBits, which has no convolution or recurrent counterpart")

    def quantize(self, weight: torch.Tensor, stats: InputStats) -> BlockQuantized:
        assert stats.xtx is not None
        if self.solver == "gptq":
            return gptq(weight, stats.xtx, self.bits, self.group_size, self.damp)
        return rtn(weight, self.bits, self.group_size)

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        example = ctx.task.example_input(2)
        layers = linear_layers(model, self.include_classifier, example[:1])
        if not layers:
            raise NotApplicableError(f"{self.name}: {self.not_applicable(model)}")
        quantized: dict[str, BlockQuantized] = {}
        errors: dict[str, dict[str, float]] = {}

        def process(name: str, layer: nn.Linear, stats: InputStats) -> None:
            assert stats.xtx is not None
            q = self.quantize(layer.weight, stats)
            other = rtn(layer.weight, self.bits, self.group_size) if self.solver == "gptq" else q
            w = layer.weight.detach().double()
            base = float(torch.einsum("nk,kl,nl->", w, stats.xtx, w))
            errors[name] = {self.solver: reconstruction_error(layer.weight, q, stats.xtx),
                            "rtn": reconstruction_error(layer.weight, other, stats.xtx), "signal": base}
            with torch.no_grad():
                layer.weight.copy_(q.dequantize())   # later layers see this layer's quantized outputs
            quantized[name] = q

        sequential(model, layers, calibration_batches(ctx, self.calibration_samples), True, process)
        model.eval()
        graph = to_matmul_nbits(export_onnx(model, example), quantized)
        stored = stored_weight_bits(graph)
        total = {key: sum(e[key] for e in errors.values()) for key in ("rtn", self.solver, "signal")}
        return Outcome(
            OnnxModel(graph, float_model=model, precision=f"int{self.bits} weights"),
            compute="physical", runtime="onnxruntime",
            requested={"weight_bits": self.bits, "group_size": self.group_size, "solver": self.solver},
            achieved={"weight_bits": stored["weight_bits"], "layers": len(quantized),
                      "packed_weight_fraction": stored["packed_weight_fraction"]},
            details={"solver": self.solver, "calibration": {"split": "train", "samples": self.calibration_samples},
                     "grid": "asymmetric min-max per group", "packed_bits_per_weight": stored["packed_bits_per_weight"],
                     "kernel": "ONNX Runtime MatMulNBits (com.microsoft): unpacks the codes block by block into "
                               "float32 and multiplies in float32 (accuracy_level 0)",
                     "kernel_precisions": kernel_precisions(graph),
                     "relative_layer_error": {k: round(total[k] / max(total["signal"], 1e-30), 8)
                                              for k in ("rtn", self.solver)},
                     "layer_errors": {name: {k: round(v, 6) for k, v in e.items()} for name, e in errors.items()},
                     **({"damp": self.damp} if self.solver == "gptq" else {})},
        )


@register_method("quant.gptq")
@dataclass
class Gptq(WeightOnlyQuantization):
    """GPTQ weight-only int4/int8 (second-order error compensation from calibration inputs), in MatMulNBits."""

    name: ClassVar[str] = "quant.gptq"
    solver: ClassVar[str] = "gptq"
    control: ClassVar[str | None] = "quant.rtn"   # the same grid and kernel, each weight rounded to nearest


@register_method("quant.rtn")
@dataclass
class RoundToNearest(WeightOnlyQuantization):
    """Round-to-nearest weight-only int4/int8 on the same grid and kernel as quant.gptq: its control."""

    name: ClassVar[str] = "quant.rtn"
    solver: ClassVar[str] = "rtn"
