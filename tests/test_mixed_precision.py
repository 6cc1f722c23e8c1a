"""quant.mixed: measured per-layer sensitivity, int8 kernels for the int8 layers, float32 kernels for the rest."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from slimbench.core.errors import ConfigError
from slimbench.deploy.onnx_export import optimized_op_counts, session_options
from slimbench.deploy.packing import pack_state_dict
from slimbench.deploy.runtimes import stored_form
from slimbench.methods import MethodContext, build_method
from slimbench.methods.mixed_precision import keep_float
from slimbench.methods.quantization import StaticInt8Params, static_int8_graph
from slimbench.tasks.base import MethodView, Task

CALIBRATION = 128
TRAINED = {"width": 16, "epochs": 4}   # the `trained` fixture's tiny-cnn


@pytest.fixture(scope="module")
def sensitive(trained: nn.Module) -> nn.Module:
    """The same function in float32, but its classifier cannot be int8: each row's per-channel scale is set by a
    weight of 1e4 on a feature that is always zero, so every other weight of the row rounds to 0 in int8."""
    model = copy.deepcopy(trained)
    with torch.no_grad():
        model[4].weight[0], model[4].bias[0] = 0.0, -1.0   # channel 0 of the last block: always 0 after ReLU
        model[8].weight[:, 0] = 1e4
    return model


def ctx_for(task: Task) -> MethodContext:
    def no_finetune(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("quant.mixed does not train")

    return MethodContext(task=MethodView(task), finetune=no_finetune, teacher=no_finetune, seed=0, budget=None,
                         train_budget=None, baseline=None, fresh_model=no_finetune)


def mixed(model: nn.Module, task: Task, **params):  # noqa: ANN003, ANN201
    method = build_method("quant.mixed", {"calibration_samples": CALIBRATION, **params})
    return method.apply(copy.deepcopy(model), ctx_for(task))


def kernels_by_weight(onnx_bytes: bytes) -> tuple[set[str], int]:
    """Int8 kernels ONNX Runtime runs, named by their int8 weight, and the number of float Conv/Gemm kernels."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(onnx_bytes, session_options(1, path), providers=["CPUExecutionProvider"])
        graph = onnx.load(path).graph
    # where ORT runs its exact U8U8 kernels (CPUs without VNNI, see deploy/ort_int8.py) it renames the weight
    int8 = {n.input[3].removesuffix("_s8_2_u8") for n in graph.node if n.op_type in ("QLinearConv", "QGemm")}
    floats = sum(n.op_type in ("Conv", "Gemm") for n in graph.node)
    return int8, floats


@pytest.fixture(scope="module")
def protected(sensitive: nn.Module, task: Task):
    return mixed(sensitive, task)   # default budget: no validation accuracy lost


def test_per_layer_table_is_complete_and_the_sensitive_layer_stays_float(protected, sensitive):
    rows = {r["layer"]: r for r in protected.details["layers"]}
    weights = {n: m.weight.numel() for n, m in sensitive.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {n: r["params"] for n, r in rows.items()} == weights            # every weight layer, its size
    assert all(isinstance(r["loss_increase"], float) and isinstance(r["accuracy_change"], float) for r in rows.values())
    assert rows["8"]["loss_increase"] > 0.5 and rows["8"]["accuracy_change"] < -0.5   # measured, not assumed
    # the int8-friendly layers cost a small fraction of the sensitive one (how small depends on the CPU that
    # trained the fixture: 0.02 on one machine, 0.085 on another)
    assert max(abs(rows[n]["loss_increase"]) for n in ("0", "3")) < min(0.2, rows["8"]["loss_increase"] / 5)
    assert {n: r["precision"] for n, r in rows.items()} == {"0": "int8", "3": "int8", "8": "float32"}
    validation = protected.details["validation"]
    assert validation["split"] == "val" and validation["samples"] == 269   # digits' whole validation split
    assert validation["all_int8"]["accuracy"] < validation["float32"]["accuracy"] - 0.5
    assert validation["chosen"]["accuracy"] >= validation["float32"]["accuracy"]


def test_int8_layers_run_int8_kernels_and_float_layers_float_kernels(protected):
    onnx_bytes = protected.model.onnx_bytes
    int8, floats = kernels_by_weight(onnx_bytes)
    assert int8 == {"ConvBnFusion_W_0.weight_quantized", "ConvBnFusion_W_3.weight_quantized"} and floats == 1
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(onnx_bytes).graph.initializer}
    assert inits["8.weight"].dtype == np.float32 and inits["8.weight"].shape == (10, 32)   # stored float32
    assert inits["ConvBnFusion_W_3.weight_quantized"].dtype == np.int8
    ops = protected.details["kernels"]
    assert ops.get("QLinearConv") == 2 and ops.get("Gemm") == 1 and "QGemm" not in ops
    assert protected.runtime == "onnxruntime" and protected.achieved["float_layers"] == 1


def test_stored_size_lies_between_all_int8_and_float32(protected, sensitive, task):
    ptq = build_method("quant.ptq_int8", {"calibration_samples": CALIBRATION}).apply(copy.deepcopy(sensitive),
                                                                                      ctx_for(task))
    fp32 = pack_state_dict(sensitive.state_dict()).nbytes
    int8 = stored_form(ptq.model).nbytes
    size = stored_form(protected.model).nbytes
    assert int8 < size < fp32
    assert size - int8 >= 3 * 320 - 64      # the float classifier's 4-byte weights instead of 1-byte ones (± scales)


def test_loss_budget_keeps_exactly_the_sensitive_layer_float(sensitive, task):
    out = mixed(sensitive, task, max_loss_increase=0.2, sensitivity_samples=100)
    assert {r["layer"] for r in out.details["layers"] if r["precision"] == "float32"} == {"8"}
    assert out.details["validation"]["samples"] == 100
    search = {s["float_layers"]: s["loss_increase"] for s in out.details["search"]}
    assert search[0] > 0.2 >= search[1] == out.achieved["val_loss_increase"]   # all-int8 misses, one float meets


def test_int8_fraction_moves_the_most_sensitive_layers_to_float_while_the_share_allows(sensitive, task):
    out = mixed(sensitive, task, int8_fraction=0.5)
    rows = out.details["layers"]
    order = sorted(rows, key=lambda r: -r["loss_increase"])
    total = sum(r["params"] for r in rows)
    int8 = sum(r["params"] for r in rows if r["precision"] == "int8")
    assert int8 / total >= 0.5 and out.achieved["int8_weight_fraction"] == pytest.approx(int8 / total, abs=1e-6)
    k = out.achieved["float_layers"]
    assert [r["precision"] for r in order] == ["float32"] * k + ["int8"] * (len(rows) - k)   # a prefix
    assert k < len(rows) and (int8 - order[k]["params"]) / total < 0.5                      # and the longest


def test_an_excluded_layer_between_int8_layers_really_stays_float(trained, task):
    """Without keep_float ONNX Runtime quantizes the excluded conv itself (per-tensor) and runs it in int8."""
    with static_int8_graph(trained, MethodView(task), StaticInt8Params(calibration_samples=CALIBRATION)) as graph:
        excluded = graph.quantize(nodes_to_exclude=["/3/Conv"])
    assert optimized_op_counts(excluded).get("QLinearConv") == 2         # the runtime's own int8 for "/3/Conv"
    kept = keep_float(excluded, {"/3/Conv"})
    int8, floats = kernels_by_weight(kept)
    assert int8 == {"ConvBnFusion_W_0.weight_quantized", "8.weight_quantized"} and floats == 1
    x = task.val.x[:64].numpy()

    def run(data: bytes) -> np.ndarray:
        session = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x})[0]

    assert not np.array_equal(run(kept), run(excluded))


@pytest.mark.parametrize("params,match", [
    ({"max_loss_increase": 0.1, "int8_fraction": 0.5}, "one budget"),
    ({"max_loss_increase": -0.1}, "max_loss_increase"),
    ({"max_accuracy_drop": -0.01}, "max_accuracy_drop"),
    ({"int8_fraction": 0.0}, "int8_fraction"),
    ({"int8_fraction": 1.5}, "int8_fraction"),
    ({"sensitivity_samples": 0}, "sensitivity_samples"),
    ({"calibration_samples": 0}, "calibration_samples"),
])
def test_bad_parameters_are_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("quant.mixed", params)


def test_mixed_precision_leaves_an_onnx_graph_no_torch_method_can_follow():
    method = build_method("quant.mixed")
    assert method.consumes == frozenset({"float"}) and method.produces == "onnx-mixed"
    assert method.budget == {"max_accuracy_drop": 0.0}


def test_ops_without_weights_next_to_a_float_layer_stay_float(trained, task):
    """With every layer but the classifier float, only the classifier's neighbourhood is quantized: no Relu that
    touches a float conv rounds its activations to int8."""
    from slimbench.methods.mixed_precision import MixedPrecision, int8_neighbourhood, weight_layers

    with static_int8_graph(trained, MethodView(task), StaticInt8Params(calibration_samples=CALIBRATION)) as graph:
        layers = weight_layers(graph.float_bytes, {name for name, _ in trained.named_modules()})
        weight_nodes = {layer.node for layer in layers}
        gemm = next(layer.node for layer in layers if layer.op == "Gemm")
        float_nodes = weight_nodes - {gemm}
        chosen = int8_neighbourhood(graph.float_bytes, weight_nodes, float_nodes)
        mixed = MixedPrecision.mixed_graph(graph, weight_nodes, float_nodes)
        nodes = {n.name: n for n in onnx.load_from_string(graph.float_bytes).graph.node}
    relus = {name for name, n in nodes.items() if n.op_type == "Relu"}
    assert gemm in chosen and not chosen & float_nodes and not chosen & relus
    int8, floats = kernels_by_weight(mixed)
    assert int8 == {"8.weight_quantized"} and floats == len(float_nodes)
