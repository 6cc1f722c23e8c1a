"""ONNX Runtime's int8 output is the exact integer result of the QDQ graph, example for example, on every CPU.

The reference below evaluates the deployed QDQ graph (the project's own quant.ptq_int8 output for a small trained
CNN) in numpy, as the ONNX operators define it: QuantizeLinear rounds half to even and saturates; each Conv/Gemm
whose inputs are DequantizeLinear outputs accumulates (x_q - zp_x) * (w_q - zp_w) in int64, adds its bias as
int32 at scale s_x * s_w (what ONNX Runtime folds the float bias into: checked against its optimized graph), and is
requantized by the QuantizeLinear after it: round_half_even(float32(acc) * float32(s_x * s_w / s_y)) + zp_y,
saturated, the float32 arithmetic ONNX Runtime's kernels use. Measured: ONNX Runtime's logits equal the reference
bit for bit on every example (no off-by-one step from float rounding of the requantization scale), so the test
asks for exact equality.

The inputs include images at the calibration range's ends, so the uint8 activations reach 255: with int8 weights
near +-127, two neighbouring products leave int16. ONNX Runtime's U8S8 kernel on an x86-64 CPU with AVX2 but no
VNNI (`vpmaddubsw`) saturates there; `test_inputs_leave_int16_pair_sums` shows with a model of that kernel that
these inputs do, and the QEMU test runs ONNX Runtime on an emulated Haswell (AVX2, no VNNI) to show the
difference without `session.x64quantprecision` and none with it (deploy/ort_int8.py decides where it is set).
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from slimbench.deploy import ort_int8
from slimbench.deploy.onnx_export import (
    OnnxModel,
    kernel_precisions,
    optimized_graph,
    optimized_op_counts,
    session_options,
)
from slimbench.methods import build_method
from slimbench.tasks import build_task
from slimbench.tasks.base import Task
from tests.conftest import method_context, train_tiny

QEMU = "qemu-x86_64-static"
QEMU_CPU = "Haswell-v4"          # AVX2 + FMA, no VNNI, no AVX-512 (QEMU's TCG has none of them)


# -- the exact integer reference ------------------------------------------------------------------------------
def _axis_shape(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-tensor value as a scalar, a per-axis one shaped to broadcast along `axis`."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


class QTensor:
    """A DequantizeLinear output kept as what it is: integers with a scale and a zero point."""

    def __init__(self, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1):
        self.q, self.scale, self.zero_point, self.axis = q, np.asarray(scale, np.float32), np.asarray(zero_point), axis

    def centred(self) -> np.ndarray:
        """q - zero point, in int64."""
        return self.q.astype(np.int64) - _axis_shape(self.zero_point, self.axis, self.q.ndim).astype(np.int64)

    def dequantized(self) -> np.ndarray:
        return self.centred().astype(np.float32) * _axis_shape(self.scale, self.axis, self.q.ndim)


class Accumulator:
    """The integer accumulator of a Conv/Gemm on quantized inputs, at scale s_x * s_w per output channel."""

    def __init__(self, acc: np.ndarray, scale: np.ndarray):
        self.acc, self.scale = acc, scale


def _conv_windows(x: np.ndarray, pads: list[int], strides: list[int], kernel: tuple[int, int],
                  pad_value: int) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] views of a padded NCHW tensor (dilation 1)."""
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=pad_value)
    return np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::strides[0], ::strides[1]]


def _pairwise_int16(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_k x[n, k] * w[k, o] the way `vpmaddubsw` + `vpmaddwd` add it: neighbouring products (k = 2i, 2i + 1)
    summed and saturated to int16, then accumulated in int32. A model of ONNX Runtime's U8S8 kernel on AVX2."""
    if x.shape[1] % 2:
        x, w = np.pad(x, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    products = x[:, :, None] * w[None]
    return np.clip(products[:, 0::2] + products[:, 1::2], -2 ** 15, 2 ** 15 - 1).sum(1)


def _integer_product(node: onnx.NodeProto, x: QTensor, w: QTensor, attrs: dict[str, Any],
                     int16_pairs: bool) -> np.ndarray:
    """Conv / Gemm / MatMul of the centred integers in int64 (or, with `int16_pairs`, as AVX2's U8S8 kernel does,
    on the raw u8 x s8 values with the zero-point terms added exactly, as ONNX Runtime's kernels do)."""
    assert not np.any(w.zero_point), "symmetric weights expected"
    if node.op_type == "Conv":
        assert attrs.get("group", 1) == 1 and set(attrs.get("dilations", [1, 1])) == {1}, node.name
        pads, strides = attrs.get("pads", [0, 0, 0, 0]), attrs.get("strides", [1, 1])
        kernel = tuple(w.q.shape[2:])
        if not int16_pairs:
            windows = _conv_windows(x.centred(), pads, strides, kernel, 0)   # padding is 0.0 = the zero point
            return np.einsum("nchwij,ocij->nohw", windows, w.centred(), dtype=np.int64, optimize=True)
        zx = int(x.zero_point)
        windows = _conv_windows(x.q.astype(np.int64), pads, strides, kernel, zx)
        n, c, oh, ow = windows.shape[:4]
        # im2col in NHWC order: the reduction runs over (kh, kw, c_in), the order ONNX Runtime packs it in
        cols = windows.transpose(0, 2, 3, 4, 5, 1).reshape(n * oh * ow, -1)
        wk = w.q.astype(np.int64).transpose(2, 3, 1, 0).reshape(cols.shape[1], -1)
        acc = _pairwise_int16(cols, wk) - zx * wk.sum(0)[None]
        return acc.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)
    assert attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
    transpose = (lambda a: a.T) if attrs.get("transB", 0) else (lambda a: a)  # noqa: E731
    if not int16_pairs:
        return x.centred() @ transpose(w.centred())
    w_q, zx = transpose(w.q).astype(np.int64), int(x.zero_point)
    return _pairwise_int16(x.q.astype(np.int64), w_q) - zx * w_q.sum(0)[None]


def integer_reference(onnx_bytes: bytes, feeds: dict[str, np.ndarray], int16_pairs: bool = False,
                      biases: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Evaluate a QDQ graph exactly in integers; the graph's outputs (QTensor for a DequantizeLinear output).

    `int16_pairs` replaces the exact accumulation by a model of the saturating AVX2 U8S8 kernel; `biases`
    collects the int32 biases in node order.
    """
    graph = onnx.load_from_string(onnx_bytes).graph
    values: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update(feeds)
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = [values[name] if name else None for name in node.input]
        if node.op_type == "QuantizeLinear":
            x, scale, zero_point = inputs[0], inputs[1], inputs[2]
            if isinstance(x, Accumulator):   # requantize: float32(acc) * float32(s_x * s_w / s_y), half to even
                multiplier = (x.scale / np.float32(scale)).astype(np.float32)
                out = _saturate(np.rint(x.acc.astype(np.float32) * _axis_shape(multiplier, 1, x.acc.ndim))
                                .astype(np.int64) + zero_point.astype(np.int64), zero_point.dtype)
            else:                            # quantize: round(x / scale) half to even, + zero point, saturate
                x = x.dequantized() if isinstance(x, QTensor) else x
                axis = attrs.get("axis", 1)
                out = _saturate(np.rint(x.astype(np.float32) / _axis_shape(scale, axis, x.ndim)).astype(np.int64)
                                + _axis_shape(zero_point, axis, x.ndim).astype(np.int64), zero_point.dtype)
        elif node.op_type == "DequantizeLinear":
            zero_point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros((), np.uint8)
            out = QTensor(inputs[0], inputs[1], zero_point, attrs.get("axis", 1))
        elif node.op_type in ("Conv", "Gemm", "MatMul"):
            x, w = inputs[0], inputs[1]
            assert isinstance(x, QTensor) and isinstance(w, QTensor) and x.scale.size == 1, node.name
            acc = _integer_product(node, x, w, attrs, int16_pairs)
            scale = (np.float32(x.scale) * w.scale).astype(np.float32)   # the bias's and the accumulator's scale
            if len(inputs) > 2 and inputs[2] is not None:
                bias = _saturate(np.rint(inputs[2].astype(np.float32) / scale), np.int32)
                if biases is not None:
                    biases.append(bias)
                acc = acc + _axis_shape(bias.astype(np.int64), 1, acc.ndim)
            out = Accumulator(acc, scale)
        elif node.op_type in ("Flatten", "Reshape") and isinstance(inputs[0], QTensor):
            x = inputs[0]
            assert x.scale.size == 1
            q = (x.q.reshape(int(np.prod(x.q.shape[:attrs.get("axis", 1)])), -1) if node.op_type == "Flatten"
                 else x.q.reshape(inputs[1]))
            out = QTensor(q, x.scale, x.zero_point)
        else:
            raise NotImplementedError(f"integer reference: {node.op_type} ({node.name})")
        values[node.output[0]] = out
    return {o.name: values[o.name] for o in graph.output}


def reference_logits(onnx_bytes: bytes, x: np.ndarray, int16_pairs: bool = False) -> np.ndarray:
    out = integer_reference(onnx_bytes, {"input": x}, int16_pairs)["logits"]
    assert isinstance(out, QTensor), "the graph's logits are a DequantizeLinear output"
    return out.dequantized()


# -- the test graph ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task("digits")


@pytest.fixture(scope="module")
def int8_model(digits: Task) -> OnnxModel:
    """quant.ptq_int8 of a small trained CNN: a 1-channel and an 8-channel 3x3 convolution, and a classifier over
    256 features; ReLUs folded into the quantized outputs. No pooling: every op is one the reference evaluates."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, digits.num_classes))
    model = train_tiny(digits, model, epochs=4)
    out = build_method("quant.ptq_int8", {"calibration_samples": 256}).apply(copy.deepcopy(model),
                                                                            method_context(digits, model))
    assert out.details["kernels"].get("QLinearConv") == 2 and out.details["kernels"].get("QGemm") == 1
    return out.model


@pytest.fixture(scope="module")
def inputs(digits: Task) -> np.ndarray:
    """The test split, then images at the calibration range's ends (uint8 255 after QuantizeLinear)."""
    low, high = float(digits.train.x.min()), float(digits.train.x.max())
    rng = np.random.default_rng(0)
    shape = (64, *digits.test.x.shape[1:])
    extremes = [np.full((1, *shape[1:]), high), np.where(rng.random(shape) < 0.5, low, high),
                np.where(rng.random(shape) < 0.8, high, low)]
    return np.concatenate([digits.test.x.numpy(), *extremes]).astype(np.float32)


def run_ort(onnx_bytes: bytes, x: np.ndarray, config: dict[str, str]) -> np.ndarray:
    session = ort.InferenceSession(onnx_bytes, session_options(1, config=config), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


# -- tests ------------------------------------------------------------------------------------------------------
def test_deployed_int8_model_equals_the_exact_integer_reference(int8_model, inputs):
    got = int8_model.with_threads(1)(torch.from_numpy(inputs)).numpy()
    want = reference_logits(int8_model.onnx_bytes, inputs)
    assert got.shape == want.shape == (len(inputs), 10)
    differing = np.flatnonzero(np.any(got != want, axis=1))
    assert differing.size == 0, f"{differing.size} of {len(inputs)} examples differ, first {differing[:5]}"


def test_reference_biases_are_the_runtimes_int32_biases(int8_model, inputs):
    """The reference evaluates the graph ONNX Runtime runs: its int32 biases are those ORT folds from float."""
    ours: list[np.ndarray] = []
    integer_reference(int8_model.onnx_bytes, {"input": inputs[:1]}, biases=ours)
    graph = optimized_graph(int8_model.onnx_bytes).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    bias_input = {"QLinearConv": 8, "QGemm": 6}
    theirs = [inits[n.input[bias_input[n.op_type]]] for n in graph.node if n.op_type in bias_input]
    assert len(ours) == len(theirs) == 3
    assert all(a.dtype == b.dtype == np.int32 and np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_inputs_leave_int16_pair_sums(int8_model, inputs, digits):
    """Where the U8S8 kernel adds neighbouring products in saturating int16, these inputs give other logits: the
    test split alone, and more so the extreme images. So the tests above fail on such a CPU without the fix."""
    exact = reference_logits(int8_model.onnx_bytes, inputs)
    saturated = reference_logits(int8_model.onnx_bytes, inputs, int16_pairs=True)
    differs = np.any(saturated != exact, axis=1)
    n_test = len(digits.test.y)
    assert differs[:n_test].sum() >= 10 and differs[n_test:].sum() >= 20


@pytest.mark.parametrize("config", [{}, ort_int8.EXACT_U8U8], ids=["default-u8s8", "x64quantprecision"])
def test_native_cpu_is_exact_where_the_probe_says(int8_model, inputs, config):
    """With the entry the output is exact on any CPU; without it, exactly where the probe finds U8S8 exact."""
    got = run_ort(int8_model.onnx_bytes, inputs, config)
    exact = np.array_equal(got, reference_logits(int8_model.onnx_bytes, inputs))
    assert exact == (ort_int8.probe_exact(config) if config else ort_int8.u8s8_exact())
    if config:
        assert exact


def test_every_session_gets_the_exact_int8_config_and_the_record_says_so(int8_model, monkeypatch):
    config = ort_int8.session_config()
    needed = ort_int8.mode() == "1" or not ort_int8.u8s8_exact()
    assert int8_model.session_config == config == (ort_int8.EXACT_U8U8 if needed else {})
    assert int8_model.with_threads(2).session_config == config
    entries = int8_model.session.get_session_options().get_session_config_entry
    if config:
        assert entries(ort_int8.X64_QUANT_PRECISION) == "1"
    record = int8_model.int8_arithmetic()
    assert record["exact"] and record["session_config"] == config
    assert record["u8s8_exact_on_this_cpu"] == ort_int8.u8s8_exact()
    monkeypatch.setenv(ort_int8.MODE_VARIABLE, "1")     # everywhere: the same outputs, U8U8 kernels on every x86-64
    assert ort_int8.session_config() == ort_int8.EXACT_U8U8 == OnnxModel(int8_model.onnx_bytes).session_config
    monkeypatch.setenv(ort_int8.MODE_VARIABLE, "never")
    with pytest.raises(ValueError, match=ort_int8.MODE_VARIABLE):
        ort_int8.session_config()


def test_kernel_evidence_is_the_same_with_the_u8u8_rewrite(int8_model, monkeypatch):
    """With the entry ORT stores the weights as uint8 + 128 (`*_s8_2_u8`); the evidence still says int8 kernels,
    so records do not depend on the CPU. Forced here: on x86-64 ORT 1.32 rewrites on VNNI CPUs too."""
    before = kernel_precisions(int8_model.onnx_bytes), optimized_op_counts(int8_model.onnx_bytes)
    monkeypatch.setenv(ort_int8.MODE_VARIABLE, "1")
    graph = optimized_graph(int8_model.onnx_bytes).graph
    rewritten = [n.input[3] for n in graph.node if n.op_type in ("QLinearConv", "QGemm")]
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert all(ort_int8.is_runtime_u8_weight(name) for name in rewritten)
    assert (kernel_precisions(int8_model.onnx_bytes), optimized_op_counts(int8_model.onnx_bytes)) == before
    assert before[0] == {"int8": 3}


def test_quantization_outcome_records_the_int8_arithmetic(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, digits.num_classes))
    out = build_method("quant.ptq_int8", {"calibration_samples": 64}).apply(model, method_context(digits, model))
    assert out.details["int8_arithmetic"] == out.model.int8_arithmetic()
    assert out.details["int8_arithmetic"]["exact"]


QEMU_SCRIPT = """
import json, sys
import numpy as np, onnxruntime as ort
from slimbench.deploy import ort_int8

model, data = sys.argv[1], np.load(sys.argv[2])
onnx_bytes = open(model, "rb").read()

def differing(config):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    for key, value in config.items():
        so.add_session_config_entry(key, value)
    got = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"]).run(None, {"input": data["x"]})[0]
    return {"exact": int(np.any(got != data["exact"], axis=1).sum()),
            "int16_pairs": int(np.any(got != data["int16_pairs"], axis=1).sum())}

print(json.dumps({"u8s8_exact": ort_int8.u8s8_exact(), "session_config": ort_int8.session_config(),
                  "default": differing({}), "x64quantprecision": differing(ort_int8.EXACT_U8U8),
                  "slimbench": differing(ort_int8.session_config()), "examples": len(data["x"])}))
"""


def run_probe(tmp_path: Path, int8_model: OnnxModel, inputs: np.ndarray, emulate: bool) -> dict[str, Any]:
    model, data, script = tmp_path / "int8.onnx", tmp_path / "data.npz", tmp_path / "probe.py"
    model.write_bytes(int8_model.onnx_bytes)
    np.savez(data, x=inputs, exact=reference_logits(int8_model.onnx_bytes, inputs),
             int16_pairs=reference_logits(int8_model.onnx_bytes, inputs, int16_pairs=True))
    script.write_text(QEMU_SCRIPT)
    command = [sys.executable, str(script), str(model), str(data)]
    if emulate:
        command = [QEMU, "-cpu", QEMU_CPU, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_avx2_without_vnni_saturates_and_the_default_config_makes_it_exact(tmp_path, int8_model, inputs):
    """ONNX Runtime on an emulated Haswell (AVX2, no VNNI): without the entry its U8S8 kernel saturates int16
    pair sums and differs from the exact reference; slimbench's probe sees that and sets the entry, and the output
    is exact. Emulation makes timings meaningless; only the numbers are compared."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs an x86-64 host to emulate an x86-64 CPU without VNNI")
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} not found: install it (Debian/Ubuntu: apt-get install -y qemu-user-static) to run "
                    f"ONNX Runtime on an emulated AVX2 CPU without VNNI")
    native, emulated = run_probe(tmp_path, int8_model, inputs, False), run_probe(tmp_path, int8_model, inputs, True)
    n = emulated["examples"]
    assert emulated["u8s8_exact"] is False and emulated["session_config"] == ort_int8.EXACT_U8U8
    assert emulated["default"]["exact"] > n // 2                       # saturated: most examples differ
    assert emulated["x64quantprecision"]["exact"] == emulated["slimbench"]["exact"] == 0
    assert native["x64quantprecision"]["exact"] == native["slimbench"]["exact"] == 0
    if native["u8s8_exact"]:                                          # e.g. this VNNI/AMX machine
        assert native["default"]["exact"] == 0
