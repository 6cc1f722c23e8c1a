"""Quantization: real int8 weights and kernels, honest storage, training-only calibration, clear refusals."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.layers import TokenEmbeddingMap
from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.deploy.onnx_export import OnnxModel, onnx_from_payload
from slimbench.deploy.packing import pack_state_dict
from slimbench.deploy.runtimes import stored_form
from slimbench.harness.measure.quality import evaluate
from slimbench.methods import MethodContext, build_method
from slimbench.methods.quantization import LoaderCalibrationReader
from slimbench.tasks import build_task
from slimbench.tasks.base import InputSpec, Split, Task
from tests.conftest import method_context

# the `trained` fixture's tiny-cnn: enough weights (~45k) that per-channel scales are a small share of its storage
TRAINED = {"width": 48, "epochs": 6}


def make_ctx(task: Task, model: nn.Module) -> MethodContext:
    return method_context(task, model,
                          fresh=lambda: build_model("tiny-cnn", task.spec, task.num_classes, {"width": 48}))


def apply(name: str, model: nn.Module, task: Task, **params):
    import copy

    return build_method(name, params).apply(copy.deepcopy(model), make_ctx(task, model))


@pytest.fixture(scope="module")
def ptq(trained: nn.Module, task: Task):
    return apply("quant.ptq_int8", trained, task, calibration_samples=256)


def weight_dequantizers(onnx_bytes: bytes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """(int8 weight, scale, zero point, axis) for every DequantizeLinear fed by a weight initializer."""
    model = onnx.load_from_string(onnx_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim >= 2:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            out.append((inits[node.input[0]], inits[node.input[1]], inits[node.input[2]], axis))
    return out


def test_ptq_weights_are_int8_per_channel_symmetric_and_run_in_int8_kernels(ptq, trained):
    assert isinstance(ptq.model, OnnxModel) and ptq.runtime == "onnxruntime" and ptq.compute == "physical"
    weights = weight_dequantizers(ptq.model.onnx_bytes)
    convs_and_linears = [m for m in trained.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # every conv and linear weight is there, int8 (the graph's node order is the exporter's, not the module's)
    assert sorted(w.shape for w, *_ in weights) == sorted(tuple(m.weight.shape) for m in convs_and_linears)
    for w, scale, zero_point, axis in weights:
        assert w.dtype == np.int8
        assert axis == 0 and scale.shape == (w.shape[0],) and scale.dtype == np.float32  # one scale per channel
        assert not np.any(zero_point)  # symmetric
        assert w.min() >= -128 and w.max() <= 127 and np.abs(w).max() >= 100  # the range is really used
    kernels = ptq.details["kernels"]
    assert kernels.get("QLinearConv", 0) == 2 and kernels.get("QGemm", 0) == 1   # what ORT executes after fusion
    assert ptq.achieved["int8_weight_fraction"] == 1.0 and ptq.achieved["per_channel_weight_tensors"] == 3


def test_ptq_storage_is_int8_about_4x_smaller_and_the_artifact_rebuilds(ptq, trained, task):
    fp32 = pack_state_dict(trained.state_dict())
    packed = stored_form(ptq.model)
    assert fp32.nbytes / packed.nbytes > 3.5
    int8_bytes = sum(t.numel() for t in packed.tensors.values() if t.dtype == torch.int8)
    assert int8_bytes > 0.9 * packed.nbytes   # the storage is the int8 weights, plus small scales and biases
    buf = io.BytesIO()
    torch.save(packed.to_payload(), buf)
    buf.seek(0)
    rebuilt = OnnxModel(onnx_from_payload(torch.load(buf, weights_only=True)))
    x = task.test.x[:16]
    assert torch.equal(rebuilt(x), ptq.model(x))


def test_int8_accuracy_is_within_a_few_points_of_fp32(ptq, trained, task):
    fp32_acc, _ = evaluate(trained, task)
    int8_acc, _ = evaluate(ptq.model, task)
    assert fp32_acc > 0.8
    assert abs(int8_acc - fp32_acc) < 0.03


def test_calibration_reads_training_samples_only(trained, monkeypatch):
    seen: list[np.ndarray] = []
    original = LoaderCalibrationReader.get_next

    def spy(self):  # noqa: ANN001, ANN202
        batch = original(self)
        if batch is not None:
            seen.extend(batch[self.input_name])
        return batch

    class Untouchable:
        def __getattr__(self, name: str):  # noqa: ANN204
            raise AssertionError("quantization touched the test split")

        def __len__(self) -> int:
            raise AssertionError("quantization touched the test split")

    monkeypatch.setattr(LoaderCalibrationReader, "get_next", spy)
    task = build_task("digits")
    test_rows = {tuple(r.tolist()) for r in task.test.x.flatten(1)}
    train_rows = {tuple(r.tolist()) for r in task.train.x.flatten(1)}
    task.test = Untouchable()   # any read of the test split fails the test
    out = apply("quant.ptq_int8", trained, task, calibration_samples=100, observer="percentile")
    assert len(seen) == 100 and out.details["calibration"] == {
        "split": "train", "samples": 100, "observer": "percentile", "percentile": 99.999}
    rows = [tuple(torch.from_numpy(s).flatten().tolist()) for s in seen]
    assert all(r in train_rows for r in rows)
    assert sum(r in test_rows for r in rows) <= 3   # digits has a few exact duplicate images across splits


@pytest.mark.parametrize("name,dtype", [("quant.fp16", torch.float16), ("quant.bf16", torch.bfloat16)])
def test_16_bit_floats_halve_storage(name, dtype, trained, task):
    out = apply(name, trained, task)
    fp32 = pack_state_dict(trained.state_dict()).nbytes
    packed = stored_form(out.model)
    assert 1.9 < fp32 / packed.nbytes < 2.2
    assert {t.dtype for t in packed.tensors.values() if t.is_floating_point()} == {dtype}
    x = task.test.x[:64]
    with torch.inference_mode():
        assert out.model(x).dtype == torch.float32
        agree = (out.model(x).argmax(1) == trained(x).argmax(1)).float().mean()
    assert agree > 0.95


def test_qat_fine_tunes_then_converts_to_the_same_int8_form(trained, task):
    out = apply("quant.qat_int8", trained, task, calibration_samples=128)
    assert out.runtime == "onnxruntime" and out.compute == "physical" and out.details["qat"]["epochs"] == 1
    weights = weight_dequantizers(out.model.onnx_bytes)
    assert len(weights) == 3 and all(w.dtype == np.int8 and s.size == w.shape[0] for w, s, _, _ in weights)
    acc, _ = evaluate(out.model, task)
    fp32_acc, _ = evaluate(trained, task)
    assert acc > fp32_acc - 0.05


def text_task(n: int = 256, length: int = 12, vocab: int = 500) -> Task:
    gen = torch.Generator().manual_seed(0)
    splits = [Split(torch.randint(1, vocab, (n, length), generator=gen), torch.randint(0, 2, (n,), generator=gen))
              for _ in range(3)]
    return Task("tokens", InputSpec(1, length, 16, modality="text", token_vocab=vocab), ["neg", "pos"], *splits)


def test_dynamic_int8_quantizes_embedding_and_linear_of_a_text_model():
    task = text_task()
    torch.manual_seed(0)
    model = nn.Sequential(TokenEmbeddingMap(500, 16), nn.Flatten(), nn.Linear(12 * 16, 64), nn.ReLU(),
                          nn.Linear(64, 2)).eval()
    out = apply("quant.dynamic_int8", model, task)
    assert out.runtime == "onnxruntime" and out.compute == "physical"
    assert out.achieved["int8_weight_fraction"] == 1.0
    inits = out.model.initializers()
    assert inits["0.embedding.weight_quantized"].dtype in (np.int8, np.uint8)   # the embedding table: 8-bit
    assert out.details["kernels"].get("DynamicQuantizeMatMul", 0) + out.details["kernels"].get("MatMulInteger", 0) >= 2
    x = task.test.x[:32]
    with torch.inference_mode():
        got, want = out.model(x), model(x)
    err = (got - want).abs()
    assert err.mean() < 0.05 and err.max() < 0.3 * want.abs().max()   # int8 rounding noise on the logits, no more
    assert pack_state_dict(model.state_dict()).nbytes / stored_form(out.model).nbytes > 3.5


def test_mostly_float_dynamic_model_is_not_labelled_int8(trained, task):
    out = apply("quant.dynamic_int8", trained, task)   # only the Linear: the convolutions stay float
    assert out.achieved["int8_weight_fraction"] < 0.1 and out.compute == "dense"
    assert "float kernels for the rest" in out.details["deployed"]
    assert sorted(out.details["float_weights"]) == ["0.weight", "3.weight"]


class DataDependent(nn.Module):
    """Python control flow on tensor values: torch.export (hence ONNX export) cannot capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) > 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


def test_unexportable_model_is_a_clear_error_never_a_silent_fp32(task):
    with pytest.raises(NotApplicableError, match="cannot be exported to ONNX"):
        apply("quant.ptq_int8", DataDependent().eval(), task, calibration_samples=32)


def test_model_without_quantizable_layers_is_refused(task):
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.ReLU()).eval()
    with pytest.raises(NotApplicableError, match="quantized no weights"):
        apply("quant.ptq_int8", model, task, calibration_samples=32)
    convs = nn.Sequential(nn.Conv2d(1, 4, 3)).eval()   # dynamic int8 reaches MatMul/Gemm/Gather: declared n/a
    reason = build_method("quant.dynamic_int8").not_applicable(convs)
    assert reason is not None and "no layer it quantizes" in reason
    with pytest.raises(NotApplicableError, match="no layer it quantizes"):
        apply("quant.dynamic_int8", convs, task)


def test_bf16_has_no_onnxruntime_path(trained, task):
    with pytest.raises(NotApplicableError, match="runtime: eager"):
        apply("quant.bf16", trained, task, runtime="onnxruntime")


@pytest.mark.parametrize("name,params,match", [
    ("quant.ptq_int8", {"observer": "kl"}, "observer"),
    ("quant.ptq_int8", {"calibration_samples": 0}, "calibration_samples"),
    ("quant.ptq_int8", {"percentile": 50.0}, "percentile"),
    ("quant.dynamic_int8", {"op_types": ["LSTM"]}, "op_types"),
    ("quant.fp16", {"runtime": "tensorrt"}, "runtime"),
])
def test_bad_parameters_are_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match):
        build_method(name, params)


@pytest.mark.parametrize("name,form", [
    ("quant.ptq_int8", "onnx-int8"), ("quant.qat_int8", "onnx-int8"), ("quant.dynamic_int8", "onnx-int8"),
    ("quant.fp16", "float16"), ("quant.bf16", "bfloat16"),
])
def test_quantization_methods_declare_the_form_they_leave(name, form):
    method = build_method(name)
    assert method.consumes == frozenset({"float"}) and method.produces == form != "float"


def test_calibration_runs_once_and_later_quantizations_reuse_its_ranges(trained, task, monkeypatch):
    from slimbench.methods.quantization import StaticInt8Params, static_int8_graph

    batches = []
    original = LoaderCalibrationReader.get_next

    def counting(self):  # noqa: ANN001, ANN202
        batch = original(self)
        batches.append(batch is not None)
        return batch

    monkeypatch.setattr(LoaderCalibrationReader, "get_next", counting)
    with static_int8_graph(trained, task, StaticInt8Params(calibration_samples=128)) as graph:
        first = graph.quantize()
        calibrated = sum(batches)
        assert graph.quantize() == first and sum(batches) == calibrated > 0   # same ranges, no second pass
        only_gemm = graph.quantize(nodes_to_quantize=["/8/Gemm"])
    assert weight_dequantizers(only_gemm)[0][0].shape == (10, 96) and len(weight_dequantizers(only_gemm)) == 1
