"""Mixed precision by measured sensitivity: int8 where the validation budget allows, float32 where it does not.

Each weight layer (Conv, Gemm, MatMul, Gather of the exported graph) is quantized alone, through the same ONNX
Runtime static QDQ path as quant.ptq_int8, and its sensitivity is the validation loss it adds over float32 on a
capped validation subset. The most sensitive layers then stay float32 until the budget holds: a measured loss
or accuracy budget (the smallest number of float layers that meets it, found by bisection over the sensitivity
order and verified on the deployed graph) or a share of int8 weights. The deployed model is the PTQ graph minus
the float layers, so ONNX Runtime runs int8 kernels for the int8 layers and float kernels for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import bounded
from slimbench.deploy.onnx_export import OnnxModel
from slimbench.methods.base import Method, MethodContext, Outcome, ReportTable, register_method
from slimbench.methods.quantization import (
    StaticInt8Graph,
    StaticInt8Params,
    int8_outcome,
    int8_outcome_parts,
    static_int8_graph,
)

WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "Gather")
# Conv/Gemm/ConvTranspose fed by a per-tensor DequantizeLinear get their float weights quantized by ONNX Runtime
# itself when it loads the graph (its WeightBiasQuantization optimizer: symmetric per-tensor int8).
RUNTIME_QUANTIZED_OPS = ("Conv", "Gemm", "ConvTranspose")
EVAL_BATCH = 256


@dataclass
class WeightLayer:
    """A weight layer of the pre-processed float graph: its node, the torch module it came from, its weights."""

    node: str
    op: str
    module: str
    params: int


def weight_layers(onnx_bytes: bytes, module_names: set[str]) -> list[WeightLayer]:
    """Conv/Gemm/MatMul/Gather nodes with a constant weight (≥ 2-D initializer), in graph order."""
    graph = onnx.load_from_string(onnx_bytes).graph
    dims = {init.name: list(init.dims) for init in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        idx = 0 if node.op_type == "Gather" else 1
        weight = node.input[idx] if len(node.input) > idx else ""
        if len(dims.get(weight, [])) < 2:
            continue
        out.append(WeightLayer(node.name, node.op_type, _module_name(node, weight, module_names),
                               int(np.prod(dims[weight]))))
    return out


def _module_name(node: onnx.NodeProto, weight: str, module_names: set[str]) -> str:
    """The torch module a node came from: its weight's name (BatchNorm folding prefixes it) or its node scope."""
    stem = weight.removeprefix("ConvBnFusion_W_").removesuffix(".weight")
    if stem in module_names:
        return stem
    scope = node.name.rsplit("/", 2)
    if len(scope) == 3 and scope[1] in module_names:
        return scope[1]
    return node.name


def int8_neighbourhood(onnx_bytes: bytes, weight_nodes: set[str], float_nodes: set[str]) -> set[str]:
    """The nodes to quantize: the int8 weight layers, and every op without weights none of whose direct producers
    or consumers is a float weight layer."""
    graph = onnx.load_from_string(onnx_bytes).graph
    producers = {out: node.name for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    floats = set(float_nodes)
    out = set(weight_nodes) - floats
    for node in graph.node:
        if node.name in weight_nodes:
            continue
        neighbours = {producers.get(i) for i in node.input} | {c for o in node.output for c in consumers.get(o, [])}
        if not neighbours & floats:
            out.add(node.name)
    return out


def keep_float(onnx_bytes: bytes, float_nodes: set[str]) -> bytes:
    """Give each float Conv/Gemm its own per-channel DequantizeLinear input (same scale, so the same values).

    ONNX Runtime quantizes the float weight of a Conv/Gemm whose input comes from a per-tensor DequantizeLinear
    (to per-tensor int8) and then runs it as an int8 kernel: an excluded layer between two int8 layers would
    silently become int8, with a coarser scheme than PTQ's. A per-axis DequantizeLinear is outside that rule and
    outside the int8 kernel fusions, so the layer keeps its float32 weights and kernel. No quantizer option does
    this, hence the rewrite.
    """
    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        kept_float = node.name in float_nodes and node.op_type in RUNTIME_QUANTIZED_OPS
        dq = producers.get(node.input[0]) if kept_float else None
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[1] in inits:
            scale = numpy_helper.to_array(inits[dq.input[1]])
            axis, channels = _input_channel_axis(node, inits)
            if scale.size == 1 and channels:
                zero = (numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2]
                        else np.zeros((), np.uint8))
                prefix = f"{node.name}_float_input"
                graph.initializer.extend([
                    numpy_helper.from_array(np.full(channels, scale.item(), scale.dtype), f"{prefix}_scale"),
                    numpy_helper.from_array(np.full(channels, zero.item(), zero.dtype), f"{prefix}_zero_point")])
                nodes.append(helper.make_node("DequantizeLinear", [dq.input[0], f"{prefix}_scale",
                                                                   f"{prefix}_zero_point"],
                                              [f"{prefix}_value"], name=f"{prefix}_dq", axis=axis))
                node.input[0] = f"{prefix}_value"
        nodes.append(node)
    used = {name for node in nodes for name in node.input} | {out.name for out in graph.output}
    del graph.node[:]   # a bypassed DequantizeLinear that fed only float layers would still run: drop it
    graph.node.extend(n for n in nodes if n.op_type != "DequantizeLinear" or any(o in used for o in n.output))
    return model.SerializeToString()


def _input_channel_axis(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[int, int]:
    """(axis, size) of the channel dimension of a Conv/Gemm activation input, from its weight's shape."""
    dims = list(inits[node.input[1]].dims) if node.input[1] in inits else []
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if not dims:
        return 1, 0
    if node.op_type == "Gemm":
        k = dims[1] if attrs.get("transB", 0) else dims[0]
        return (0 if attrs.get("transA", 0) else 1), k
    if node.op_type == "ConvTranspose":
        return 1, dims[0]
    return 1, dims[1] * attrs.get("group", 1)


@dataclass
class Measured:
    loss: float
    accuracy: float


def _layer_rows(details: dict[str, Any]) -> list[list[Any]]:
    return [[row.get("layer"), row.get("op"), row.get("params"), f"{row.get('loss_increase', float('nan')):+.6f}",
             f"{100 * row.get('accuracy_change', float('nan')):+.2f}", row.get("precision")]
            for row in details.get("layers") or []]


def _layer_summary(details: dict[str, Any], metrics: dict[str, Any]) -> str:
    layers: list[dict[str, Any]] = details["layers"]
    int8 = [row for row in layers if row.get("precision") == "int8"]
    params_int8 = sum(row.get("params", 0) for row in int8)
    params_all = sum(row.get("params", 0) for row in layers) or 1
    search = "; ".join(f"{s['float_layers']} float: Δloss {s['loss_increase']:+.4f}, "
                       f"Δacc {100 * s['accuracy_change']:+.2f} pts" for s in details.get("search", []))
    return (f"{len(int8)} of {len(layers)} layers int8, holding {100 * params_int8 / params_all:.1f} % of the weights; "
            f"test accuracy {metrics['accuracy']:.4f}; stored {metrics['stored_bytes']:,} B. "
            f"Search: {search or 'none recorded'}.")


# what the search chose for each layer and the sensitivity it measured to choose it: made once per trained
# baseline, so the lowest seed's record shows it
LAYER_TABLE = ReportTable(
    title="Mixed precision: each layer's measured sensitivity and chosen precision",
    intro="Sensitivity = the validation loss (nats) and accuracy change when only that layer runs in int8 (the rest "
          "float32), in ONNX Runtime; the most sensitive layers stay float32 until the budget holds. The search line "
          "lists how many float32 layers each probe kept and what the whole graph lost.",
    headers=("layer", "op", "params", "Δ val loss (int8 alone)", "Δ val acc (pts)", "precision"),
    rows=_layer_rows, summary=_layer_summary)


@register_method("quant.mixed")
@dataclass
class MixedPrecision(StaticInt8Params, Method):
    """Per-layer int8 or float32 by measured sensitivity, to a validation-loss, accuracy or int8-share budget.

    Give one budget: `max_loss_increase` (validation cross-entropy over float32, in nats), `max_accuracy_drop`
    (validation accuracy, as a fraction) or `int8_fraction` (the least share of weights in int8 layers).
    Without one, no validation accuracy may be lost.
    """
    structure_from_data: ClassVar[bool] = True   # which layers stay float is chosen from measured errors

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "quant.mixed"
    version: ClassVar[int] = 3   # 2: ops without weights next to a float layer stay float; 3: exact int8 on every CPU
    uses_finetune = False
    produces = "onnx-mixed"
    report_tables: ClassVar[tuple[ReportTable, ...]] = (LAYER_TABLE,)
    # an accuracy budget may be unreachable on a tiny model
    example: ClassVar[tuple[str, dict[str, Any]]] = ("tiny-cnn", {"int8_fraction": 0.5})
    max_loss_increase: float | None = bounded(None, ge=0.0)
    max_accuracy_drop: float | None = bounded(None, ge=0.0, le=1.0)
    int8_fraction: float | None = bounded(None, gt=0.0, le=1.0)
    sensitivity_samples: int = bounded(1000, ge=1)   # validation samples each layer's sensitivity is measured on

    def __post_init__(self) -> None:
        super().__post_init__()   # every range, this class's included
        given = {k: v for k, v in self.budget_fields().items() if v is not None}
        if len(given) > 1:
            raise ConfigError(f"{self.name}: give one budget, got {given}")

    def budget_fields(self) -> dict[str, float | None]:
        return {"max_loss_increase": self.max_loss_increase, "max_accuracy_drop": self.max_accuracy_drop,
                "int8_fraction": self.int8_fraction}

    @property
    def budget(self) -> dict[str, float]:
        given = {k: v for k, v in self.budget_fields().items() if v is not None}
        return given or {"max_accuracy_drop": 0.0}

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        model = model.eval()
        x, y = ctx.task.val.x[:self.sensitivity_samples], ctx.task.val.y[:self.sensitivity_samples]
        with static_int8_graph(model, ctx.task, self) as graph:
            layers = weight_layers(graph.float_bytes, {name for name, _ in model.named_modules()})
            if not layers:
                raise NotApplicableError(f"quant.mixed: {type(model).__name__} has no Conv/Gemm/MatMul/Gather layer "
                                         f"with constant weights to quantize")
            reference = evaluate(graph.float_bytes, x, y)
            nodes = {layer.node for layer in layers}
            sensitivity = {layer.node: evaluate(self.probe_graph(graph, nodes, layer.node), x, y) for layer in layers}
            # most sensitive first: loss added, then accuracy lost, then graph order
            order = sorted(layers, key=lambda layer: (-(sensitivity[layer.node].loss - reference.loss),
                                                      sensitivity[layer.node].accuracy))
            search: dict[int, Measured] = {}

            def with_float(k: int) -> Measured:   # the k most sensitive layers float, the rest int8
                if k not in search:
                    search[k] = evaluate(self.mixed_graph(graph, nodes, {layer.node for layer in order[:k]}), x, y)
                return search[k]

            keep = self.choose(order, reference, with_float)
            float_nodes = {layer.node for layer in order[:keep]}
            final = self.mixed_graph(graph, nodes, float_nodes)
            details = graph.details()
            chosen, all_int8 = with_float(keep), with_float(0)   # measured already unless the budget is a share
        onnx_model, info = int8_outcome_parts(final, model, "quant.mixed", details, precision="int8+float32")
        table = [{"layer": layer.module, "node": layer.node, "op": layer.op, "params": layer.params,
                  "loss_increase": round(sensitivity[layer.node].loss - reference.loss, 6),
                  "accuracy_change": round(sensitivity[layer.node].accuracy - reference.accuracy, 6),
                  "precision": "float32" if layer.node in float_nodes else "int8"} for layer in layers]
        info.update({
            "layers": table,
            "validation": {"split": "val", "samples": len(y), "float32": vars(reference),
                           "all_int8": vars(all_int8), "chosen": vars(chosen)},
            "search": [{"float_layers": k, "loss_increase": round(m.loss - reference.loss, 6),
                        "accuracy_change": round(m.accuracy - reference.accuracy, 6)}
                       for k, m in sorted(search.items())],
        })
        out = int8_outcome(onnx_model, info, {**self.budget, "sensitivity_samples": self.sensitivity_samples})
        out.achieved.update({"int8_layers": len(layers) - keep, "float_layers": keep,
                             "val_loss_increase": round(chosen.loss - reference.loss, 6),
                             "val_accuracy_change": round(chosen.accuracy - reference.accuracy, 6)})
        return out

    @staticmethod
    def mixed_graph(graph: StaticInt8Graph, nodes: set[str], float_nodes: set[str]) -> bytes:
        """The PTQ graph with the weight layers in `float_nodes` kept float32 (see `keep_float`).

        Ops without weights (Add, Clip, pooling) are quantized only where no float weight layer touches them: a
        quantized residual Add next to a float conv would round that conv's input and output to int8 anyway, so a
        graph with all but one layer "float" would still run mostly int8 activations.
        """
        if not float_nodes:
            return graph.quantize()
        return keep_float(graph.quantize(nodes_to_quantize=sorted(int8_neighbourhood(graph.float_bytes, nodes,
                                                                                     float_nodes))), float_nodes)

    @staticmethod
    def probe_graph(graph: StaticInt8Graph, nodes: set[str], node: str) -> bytes:
        """Only `node` (its weights and input activation) int8, everything else float32: one layer's sensitivity."""
        return keep_float(graph.quantize(nodes_to_quantize=[node]), nodes - {node})

    def choose(self, order: list[WeightLayer], reference: Measured, with_float: Callable[[int], Measured]) -> int:
        """How many of the most sensitive layers stay float32 so the budget holds."""
        n = len(order)
        if self.int8_fraction is not None:
            total = sum(layer.params for layer in order)
            int8 = total
            keep = 0
            for layer in order:   # most sensitive first, while the int8 share stays within the budget
                if (int8 - layer.params) / total < self.int8_fraction - 1e-12:
                    break
                int8 -= layer.params
                keep += 1
            return keep

        def fits(k: int) -> bool:
            m = with_float(k)
            if self.max_loss_increase is not None:
                return m.loss - reference.loss <= self.max_loss_increase + 1e-9
            return reference.accuracy - m.accuracy <= self.budget["max_accuracy_drop"] + 1e-9

        if fits(0):
            return 0
        if n == 1 or not fits(n - 1):
            raise NotApplicableError(
                f"quant.mixed: {self.budget} cannot be met with any int8 layer (even only the least sensitive one "
                f"int8 exceeds it on {len(order)} layers); use float32 or a larger budget")
        low, high = 0, n - 1    # low misses the budget, high meets it
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if fits(mid) else (mid, high)
        return high


def evaluate(onnx_bytes: bytes, x: torch.Tensor, y: torch.Tensor) -> Measured:
    """Cross-entropy and accuracy of an ONNX graph in ONNX Runtime (the runtime it is deployed in)."""
    session = OnnxModel(onnx_bytes, threads=torch.get_num_threads())
    logits = torch.cat([session(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]).float()
    return Measured(loss=float(F.cross_entropy(logits, y)), accuracy=float((logits.argmax(1) == y).float().mean()))
