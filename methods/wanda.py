"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"): prune by weights and
activations, with no retraining and no weight update.

A weight's score is |W_ij| · ‖X_j‖₂, its magnitude times the norm of its input feature over calibration tokens, and
weights compete only within their output row (the paper's per-output comparison group). Layers are pruned in forward
order, each scored on the inputs the already-pruned layers before it produce. Two patterns:
- `unstructured`: the lowest-scoring `sparsity` share of each row;
- `n:m`: in every group of `m` consecutive weights of a row, the `n` highest-scoring stay (2:4 by default), the
  pattern sparse tensor cores run. This CPU has no such kernel (neither PyTorch's CPU backend nor ONNX Runtime's CPU
  provider; `torch.sparse.to_sparse_semi_structured` needs a CUDA GPU), so the model runs dense with zeros: the
  record says so, and gives the bytes of the N:M storage format (kept values plus their in-group indices), encoded
  and decoded back here, beside the harness's own measured stored form.

Only `nn.Linear` layers are scored, as in the paper (convolutions would need im2col inputs for the same criterion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import bounded, check_ranges
from slimbench.deploy.packing import pack_bits, unpack_bits
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.layer_inputs import InputStats, calibration_batches, linear_layers, sequential

DENSE_KERNELS = ("dense fp32 kernels multiply the zeros: no N:M sparse kernel on this CPU (PyTorch CPU and ONNX "
                 "Runtime's CPU provider have none; torch.sparse.to_sparse_semi_structured needs a CUDA GPU)")


def wanda_scores(weight: torch.Tensor, stats: InputStats) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ (the paper's eq. 1)."""
    return weight.detach().abs() * stats.norm.to(weight.dtype)[None, :]


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing the round(sparsity · columns) lowest scores of every row."""
    drop = round(sparsity * scores.shape[1])
    mask = torch.ones_like(scores, dtype=torch.bool)
    if drop:
        mask.scatter_(1, scores.argsort(dim=1, stable=True)[:, :drop], False)
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the `n` highest scores of every `m` consecutive weights of a row."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    keep = groups.topk(n, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).reshape(rows, cols)


def is_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of `m` consecutive weights of every row has at most `n` non-zeros."""
    rows, cols = weight.shape
    return cols % m == 0 and bool(((weight.reshape(rows, cols // m, m) != 0).sum(-1) <= n).all())


def nm_encode(weight: torch.Tensor, n: int, m: int) -> dict[str, np.ndarray]:
    """The N:M storage format: per group of `m`, its `n` kept values and their ceil(log2 m)-bit positions.

    A group with fewer than `n` non-zeros stores zeros at the first free positions, so every group takes the same
    bytes (what makes the format a fixed-size one that sparse tensor cores read).
    """
    rows, cols = weight.shape
    groups = weight.detach().reshape(rows, cols // m, m)
    order = (groups != 0).to(torch.int8).argsort(dim=-1, descending=True, stable=True)[..., :n].sort(-1).values
    values = groups.gather(-1, order)
    bits = max(1, math.ceil(math.log2(m)))
    return {"values": values.contiguous().numpy(), "indices": pack_bits(order.reshape(-1).to(torch.uint8).numpy(),
                                                                         bits)}


def nm_decode(parts: dict[str, np.ndarray], shape: tuple[int, int], n: int, m: int) -> torch.Tensor:
    rows, cols = shape
    bits = max(1, math.ceil(math.log2(m)))
    index = torch.from_numpy(unpack_bits(parts["indices"], bits, rows * (cols // m) * n).astype(np.int64))
    out = torch.zeros(rows, cols // m, m, dtype=torch.from_numpy(parts["values"]).dtype)
    out.scatter_(-1, index.reshape(rows, cols // m, n), torch.from_numpy(parts["values"]))
    return out.reshape(rows, cols)


def nm_storage(layers: dict[str, nn.Linear], n: int, m: int) -> dict[str, Any]:
    """Bytes of the pruned layers in the N:M format, each encoded and decoded back to the very weights."""
    values = indices = dense = 0
    for name, layer in layers.items():
        parts = nm_encode(layer.weight, n, m)
        if not torch.equal(nm_decode(parts, (layer.out_features, layer.in_features), n, m), layer.weight.detach()):
            raise RuntimeError(f"prune.wanda: the {n}:{m} encoding of {name} does not decode to its weights")
        values += parts["values"].nbytes
        indices += parts["indices"].nbytes
        dense += layer.weight.numel() * layer.weight.element_size()
    return {"format": f"{n}:{m} (kept values + {max(1, math.ceil(math.log2(m)))}-bit in-group indices)",
            "values_bytes": values, "index_bytes": indices, "bytes": values + indices, "dense_bytes": dense,
            "ratio": round(dense / max(values + indices, 1), 4)}


@register_method("prune.wanda")
@dataclass
class Wanda(Method):
    """Wanda: prune each Linear layer's rows by |W|·‖X‖ on calibration data, unstructured or N:M; no retraining."""

    family: ClassVar[str] = "pruning"
    name: ClassVar[str] = "prune.wanda"
    uses_finetune = False
    structure_from_data: ClassVar[bool] = True      # the pattern depends on the calibration activations
    knobs: ClassVar[tuple[str, ...]] = ("sparsity", "n", "m")
    example: ClassVar[tuple[str, dict[str, Any]]] = ("vit", {"pattern": "n:m"})

    pattern: Literal["unstructured", "n:m"] = "unstructured"
    sparsity: float | None = None   # unstructured (default 0.5); with n:m it is 1 - n/m and may be left out
    n: int = bounded(2, ge=1)
    m: int = bounded(4, ge=2)
    calibration_samples: int = bounded(128, ge=1)   # training examples; the paper uses 128 sequences
    include_classifier: bool = False                # the paper leaves the output layer dense

    def __post_init__(self) -> None:
        check_ranges(self, self.name)
        if self.pattern == "n:m":
            if self.n >= self.m:
                raise ConfigError(f"{self.name}: n ({self.n}) must be smaller than m ({self.m})")
            if self.sparsity is not None and not math.isclose(self.sparsity, 1 - self.n / self.m):
                raise ConfigError(f"{self.name}: sparsity {self.sparsity} contradicts {self.n}:{self.m} "
                                  f"({1 - self.n / self.m:g}); leave it out with pattern n:m")
        elif self.sparsity is None:
            self.sparsity = 0.5
        elif not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"{self.name}: sparsity must lie in (0, 1), got {self.sparsity}")

    @property
    def target(self) -> float:
        return 1 - self.n / self.m if self.pattern == "n:m" else float(self.sparsity or 0.0)

    def eligible(self, model: nn.Module, example: torch.Tensor | None = None) -> dict[str, nn.Linear]:
        layers = linear_layers(model, self.include_classifier, example)
        if self.pattern == "n:m":
            layers = {k: v for k, v in layers.items() if v.in_features % self.m == 0}
        return layers

    def not_applicable(self, model: nn.Module) -> str | None:
        if self.eligible(model):
            return None
        where = "" if self.include_classifier else " besides its classifier"
        fit = f" whose input width is a multiple of m={self.m}" if self.pattern == "n:m" else ""
        return (f"{type(model).__name__} has no nn.Linear layer{fit}{where}: Wanda scores Linear layers by their "
                f"input activations (transformers, MLPs)")

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        example = ctx.task.example_input(1)
        layers = self.eligible(model, example)
        if not layers:
            raise NotApplicableError(f"{self.name}: {self.not_applicable(model)}")
        skipped = sorted(set(linear_layers(model, self.include_classifier, example)) - set(layers))

        def prune(_name: str, layer: nn.Linear, stats: InputStats) -> None:
            scores = wanda_scores(layer.weight, stats)
            mask = (nm_mask(scores, self.n, self.m) if self.pattern == "n:m"
                    else unstructured_mask(scores, self.target))
            with torch.no_grad():
                layer.weight.mul_(mask)

        sequential(model, layers, calibration_batches(ctx, self.calibration_samples), False, prune)
        model.eval()
        pruned = sum(int((m.weight == 0).sum()) for m in layers.values())
        covered = sum(m.weight.numel() for m in layers.values())
        weights = [p for p in model.parameters() if p.dim() >= 2]
        all_zeros = sum(int((p == 0).sum()) for p in weights)
        details: dict[str, Any] = {
            "pattern": self.pattern, "calibration_samples": self.calibration_samples, "criterion": "|W|·‖X‖₂ per row",
            "layers": len(layers), "left_dense": skipped,
            "covered_weight_fraction": round(covered / sum(p.numel() for p in weights), 6),
            "kernels": DENSE_KERNELS}
        requested: dict[str, Any] = {"pattern": self.pattern, "sparsity": self.target}
        achieved: dict[str, Any] = {"layer_sparsity": round(pruned / covered, 6),
                                    "sparsity": round(all_zeros / sum(p.numel() for p in weights), 6)}
        if self.pattern == "n:m":
            requested.update(n=self.n, m=self.m)
            achieved["nm_pattern"] = all(is_nm(m.weight, self.n, self.m) for m in layers.values())
            details["nm_storage"] = nm_storage(layers, self.n, self.m)
        # zeros in dense tensors: the harness labels the compute it measures (masked) and the stored form it packs
        return Outcome(model, compute="simulated", requested=requested, achieved=achieved, details=details)
