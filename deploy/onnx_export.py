"""ONNX export and ONNX Runtime execution: the deployment form of int8 and fp16 models.

`export_onnx` turns a torch model into ONNX bytes (TorchScript exporter, torch.export's where that fails; fixed
opset, dynamic batch axis); `OnnxModel` runs such bytes in an ONNX Runtime session behind the `nn.Module` call
interface, so the harness evaluates and times it exactly like a torch model; `onnx_packed` is its stored form
(the graph's initializers, i.e. the real weight storage, plus the weight-free graph so the artifact can be
rebuilt).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from slimbench.core.errors import NotApplicableError
from slimbench.deploy import ort_int8
from slimbench.deploy.packing import Packed, pack_state_dict, unpack_state_dict

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Kernels that compute on int8 data in ONNX Runtime's CPU provider (after its graph optimisations fuse QDQ).
INT8_KERNELS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QGemm", "QLinearGlobalAveragePool",
                "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
                "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "QLinearWhere"}
_EXPORT_CACHE: collections.OrderedDict[str, bytes] = collections.OrderedDict()
_EXPORT_CACHE_SIZE = 4

for _name in ("torch.onnx", "onnxscript", "onnx_ir"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def _export_key(model: nn.Module, example: torch.Tensor) -> str:
    """Architecture (repr), weights and input signature: the same trained baseline exports once per process."""
    h = hashlib.sha256(repr(model).encode())
    h.update(f"{tuple(example.shape[1:])}{example.dtype}{OPSET}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{t.dtype}{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of `model` in eval mode with a dynamic batch axis; NotApplicableError says why export failed."""
    model = model.eval()
    example = example[:2] if len(example) >= 2 else example.repeat(2, *([1] * (example.dim() - 1)))
    key = _export_key(model, example)
    if key in _EXPORT_CACHE:
        _EXPORT_CACHE.move_to_end(key)
        return _EXPORT_CACHE[key]
    errors = []
    for label, exporter in (("TorchScript exporter", _export_torchscript), ("torch.export exporter", _export_dynamo)):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", torch.jit.TracerWarning)  # a trace that may be wrong: use torch.export
                data = exporter(model, example)
            break
        except Exception as exc:  # the exporters raise many types; the message is what the user needs
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            errors.append(f"{label}: {exc.__class__.__name__}: {first}")
    else:
        raise NotApplicableError(
            f"{type(model).__name__} cannot be exported to ONNX (opset {OPSET}): " + "; ".join(errors)) from None
    _EXPORT_CACHE[key] = data
    while len(_EXPORT_CACHE) > _EXPORT_CACHE_SIZE:
        _EXPORT_CACHE.popitem(last=False)
    return data


def _export_torchscript(model: nn.Module, example: torch.Tensor) -> bytes:
    """TorchScript exporter: tried first, as it exports an order of magnitude faster than torch.export's.

    No constant folding, so initializers keep their module names and BatchNorm stays a node (ONNX Runtime fuses it
    into the convolution when it loads the graph) - the same graph torch.export's exporter writes.
    """
    buf = io.BytesIO()
    # The TorchScript exporter writes to file-like objects too; torch's annotation lists only paths.
    torch.onnx.export(model, (example,), buf,  # type: ignore[arg-type]
                      dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                      do_constant_folding=False)
    return buf.getvalue()


def _export_dynamo(model: nn.Module, example: torch.Tensor) -> bytes:
    """torch.export exporter: for models the TorchScript tracer cannot take."""
    program = torch.onnx.export(
        model, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
    )
    assert program is not None  # dynamo=True always returns an ONNXProgram
    return program.model_proto.SerializeToString()


def session_options(threads: int | None, optimized_path: str | None = None,
                    config: dict[str, str] | None = None) -> ort.SessionOptions:
    """Fixed intra-op threads and sequential execution, so ORT and torch timings compare like for like; `config`
    (default: `ort_int8.session_config()`, exact int8 arithmetic on this CPU) as session config entries."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    for key, value in (ort_int8.session_config() if config is None else config).items():
        so.add_session_config_entry(key, value)
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


class OnnxModel(nn.Module):
    """An ONNX Runtime CPU session with the `nn.Module` call interface (float tensor in, torch tensor out).

    `float_model` is the torch model the graph was made from (same architecture); it is kept out of the module
    tree because the ONNX graph, not those float weights, is what is deployed. It serves MAC and parameter counts.
    `session_config` holds the session config entries its session runs with (default: exact int8 arithmetic on
    this CPU, see `ort_int8`); `int8_arithmetic()` says what they mean here, for the record.
    """

    float_model: nn.Module | None   # set through __dict__, so nn.Module does not register it as a submodule

    def __init__(self, onnx_bytes: bytes, float_model: nn.Module | None = None, threads: int | None = None,
                 precision: str = "float32", session_config: dict[str, str] | None = None):
        super().__init__()
        self.onnx_bytes, self.threads, self.precision = onnx_bytes, threads, precision
        self.session_config = ort_int8.session_config() if session_config is None else dict(session_config)
        self.__dict__["float_model"] = float_model
        self._session: ort.InferenceSession | None = None

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            self._session = ort.InferenceSession(self.onnx_bytes, session_options(self.threads,
                                                                                  config=self.session_config),
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def with_threads(self, threads: int | None) -> OnnxModel:
        return OnnxModel(self.onnx_bytes, self.float_model, threads, self.precision, self.session_config)

    def int8_arithmetic(self) -> dict[str, Any]:
        return ort_int8.int8_arithmetic(self.session_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.session.get_inputs()[0].name
        return torch.from_numpy(self.session.run(None, {inp: x.detach().cpu().numpy()})[0])

    def __getstate__(self) -> dict[str, Any]:  # sessions do not pickle or deep-copy; they are rebuilt lazily
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def initializers(self) -> dict[str, np.ndarray]:
        return initializer_arrays(self.onnx_bytes)

    def kernel_ops(self) -> dict[str, int]:
        return optimized_op_counts(self.onnx_bytes)

    def extra_repr(self) -> str:
        return (f"precision={self.precision}, bytes={len(self.onnx_bytes)}, threads={self.threads}, "
                f"session_config={self.session_config}")


def initializer_arrays(onnx_bytes: bytes) -> dict[str, np.ndarray]:
    model = onnx.load_from_string(onnx_bytes)
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def optimized_op_counts(onnx_bytes: bytes) -> dict[str, int]:
    """Operator types ONNX Runtime actually executes after its graph optimisations (e.g. QDQ -> QLinearConv)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(onnx_bytes, session_options(1, path), providers=["CPUExecutionProvider"])
        graph = onnx.load(path).graph
    return dict(collections.Counter(node.op_type for node in graph.node))


# Operators whose weight operand decides the kernel's arithmetic (input 1 = the weight / B matrix).
COMPUTE_OPS = {"Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "QLinearConv",
               "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "NhwcConv", "NhwcFusedConv"}
_PRODUCES_FLOAT = {"DequantizeLinear"}   # a weight dequantized at run time feeds a float kernel


def optimized_graph(onnx_bytes: bytes, level: str = "all") -> onnx.ModelProto:
    """The graph ONNX Runtime really executes after its optimisations (`basic` = constant folding and
    Conv+BatchNorm fusion only; `all` = everything the CPU provider does, incl. layout transforms)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        so = session_options(1, path)
        if level == "basic":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        return onnx.load(path)


def kernel_precisions(onnx_bytes: bytes) -> dict[str, int]:
    """Compute kernels by the element type of their weight operand, in the graph ORT executes.

    This is what the runtime computes in, whatever the file stores: ORT's CPU provider has no fp16
    convolution, so an fp16 file's convolutions show up here as float32 (it casts the weights on load). A
    MatMulNBits kernel (packed 4/8-bit weights, float32 arithmetic) counts as "int4 weight-only" / "int8 weight-only".
    """
    graph = optimized_graph(onnx_bytes).graph
    types = {init.name: init.data_type for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    counts: collections.Counter[str] = collections.Counter()
    for node in graph.node:
        if node.op_type == "MatMulNBits":   # packed low-bit weights, unpacked to float32 inside the kernel
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            counts[f"int{bits} weight-only"] += 1
            continue
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        weight = node.input[3] if node.op_type in ("QLinearConv", "QLinearMatMul", "QGemm") else node.input[1]
        if weight in types and ort_int8.is_runtime_u8_weight(weight):
            elem = onnx.TensorProto.INT8   # stored int8, shifted by 128 for ORT's exact U8U8 kernels (ort_int8)
        elif weight in types:
            elem = types[weight]
        elif weight in producers and producers[weight].op_type == "Cast":
            elem = next(a.i for a in producers[weight].attribute if a.name == "to")
        elif weight in producers and producers[weight].op_type in _PRODUCES_FLOAT:
            elem = onnx.TensorProto.FLOAT
        else:
            continue   # an activation × activation product: no weight operand
        counts[onnx.helper.tensor_dtype_to_np_dtype(elem).name] += 1
    return dict(counts)


def int8_kernel_count(op_counts: dict[str, int]) -> int:
    return sum(n for op, n in op_counts.items() if op in INT8_KERNELS)


# -- stored form -----------------------------------------------------------------------------------------
ONNX_PAYLOAD_KEY = "onnx_graph"


@dataclass
class OnnxPacked(Packed):
    """Packed ONNX initializers (the weight storage `nbytes` counts) plus the weight-free graph.

    The graph is the counterpart of a torch model's constructor code, so it is not counted as weight storage,
    but it goes into the artifact file (and its file/gzip size) so the exact ONNX model can be rebuilt.
    """

    graph: bytes = field(default=b"")

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), ONNX_PAYLOAD_KEY: self.graph}


def onnx_packed(onnx_bytes: bytes) -> OnnxPacked:
    model = onnx.load_from_string(onnx_bytes)
    tensors = {init.name: torch.from_numpy(np.array(numpy_helper.to_array(init))) for init in model.graph.initializer}
    del model.graph.initializer[:]
    base = pack_state_dict(tensors)
    return OnnxPacked(base.tensors, base.meta, graph=model.SerializeToString())


def onnx_from_payload(payload: dict[str, Any]) -> bytes:
    """Rebuild the ONNX model bytes from a saved artifact payload (loaded with `weights_only=True`)."""
    if ONNX_PAYLOAD_KEY not in payload:
        raise ValueError("artifact has no ONNX graph (it stores a torch state dict)")
    model = onnx.load_from_string(payload[ONNX_PAYLOAD_KEY])
    for name, tensor in unpack_state_dict(Packed.from_payload(payload)).items():
        model.graph.initializer.append(numpy_helper.from_array(tensor.numpy(), name))
    return model.SerializeToString()
