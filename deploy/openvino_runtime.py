"""OpenVINO's CPU plugin as a deployment target: it reads the same ONNX export ONNX Runtime runs.

Two registrations, because OpenVINO's default is not float32 everywhere: `openvino` compiles with the f32
precision hint (the same arithmetic as the other float runtimes), `openvino-default` with OpenVINO's own default,
which on CPUs with bf16 or AMX units runs float layers in bfloat16 and so can change accuracy. Which precision
really ran is read back from the compiled model and recorded. An int8 QDQ graph (slimbench's or a peer's) runs in
OpenVINO's int8 kernels either way; the record counts the layers that ran in i8/u8.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimbench.core.errors import NotApplicableError
from slimbench.deploy.executorch_runtime import only_in_executorch
from slimbench.deploy.onnx_export import OnnxModel, export_onnx
from slimbench.deploy.runtime_registry import Runtime, register_runtime

INT8_PRECISIONS = {"i8", "u8"}
ISA_CAP = "ONEDNN_MAX_CPU_ISA"   # slimbench's kernel pins cap OpenVINO's bundled oneDNN too (core/kernels.py)
DTYPE_NAMES = {"i8": "int8", "u8": "uint8", "f32": "float32", "bf16": "bfloat16", "f16": "float16"}
COMPUTE_LAYERS = {"Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution"}


class OpenVinoModel(nn.Module):
    """An OpenVINO compiled model behind the `nn.Module` call interface (float tensor in, torch tensor out).

    Holds the ONNX bytes it was read from, so it pickles (to the latency process) and rebuilds its compiled model
    there; `float_model` serves parameter and MAC counts, like `OnnxModel`'s.
    """

    float_model: nn.Module | None   # set through __dict__: not a submodule, the compiled graph is what runs

    def __init__(self, onnx_bytes: bytes, precision_hint: str | None, threads: int | None,
                 float_model: nn.Module | None = None, source_precision: str = "float32"):
        super().__init__()
        self.onnx_bytes, self.precision_hint, self.threads = onnx_bytes, precision_hint, threads
        self.source_precision = source_precision
        self.__dict__["float_model"] = float_model
        self._compiled: Any = None

    def _model(self) -> Any:
        import openvino as ov

        # OpenVINO reads ONNX from a path (its in-memory reader takes IR only); the file lives only for the read
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(self.onnx_bytes)
            return ov.Core().read_model(str(path))

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_NUM_THREADS": self.threads or (os.cpu_count() or 1)}
        if self.precision_hint:
            config["INFERENCE_PRECISION_HINT"] = self.precision_hint
        return config

    @property
    def compiled(self) -> Any:
        if self._compiled is None:
            import openvino as ov

            self._compiled = ov.Core().compile_model(self._model(), "CPU", self.config())
        return self._compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.detach().cpu().numpy())
        return torch.from_numpy(np.asarray(out[0]).copy())

    def __getstate__(self) -> dict[str, Any]:   # compiled models do not pickle; rebuilt lazily
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    def inference_precision(self) -> str:
        """The float precision OpenVINO chose on this CPU (the hint, or its default: bf16 where the CPU has it)."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").rstrip("'>")

    def layer_precisions(self) -> dict[str, int]:
        """Compute layers of the graph OpenVINO executes, by the precision each really ran in."""
        counts: collections.Counter[str] = collections.Counter()
        for op in self.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            if layer in COMPUTE_LAYERS and "runtimePrecision" in info:
                counts[info["runtimePrecision"].astype(str)] += 1
        return dict(counts)

    def kernel_precisions(self) -> dict[str, int]:
        """`layer_precisions` in numpy's dtype names, as `onnx_export.kernel_precisions` gives ONNX Runtime's."""
        counts: collections.Counter[str] = collections.Counter()
        for precision, n in self.layer_precisions().items():
            counts[DTYPE_NAMES.get(precision, precision)] += n
        return dict(counts)

    def ir_bytes(self) -> int:
        """Size of the model as OpenVINO stores it (IR .xml + .bin, weights not recompressed)."""
        import openvino as ov

        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "model.xml"
            ov.save_model(self._model(), str(xml), compress_to_fp16=False)
            return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size

    def extra_repr(self) -> str:
        return f"precision_hint={self.precision_hint}, bytes={len(self.onnx_bytes)}, threads={self.threads}"


# Compiles the graph and runs one input, alone in a child process: argv = ONNX path, input .npy path, config JSON.
PROBE = """
import json, sys
import numpy as np
import openvino as ov
core = ov.Core()
core.compile_model(core.read_model(sys.argv[1]), "CPU", json.loads(sys.argv[3]))(np.load(sys.argv[2]))
"""
_PROBED: dict[str, str | None] = {}
MEASURED_NATIVELY = "measured in the native-kernel process (latency) and with --native-kernels (accuracy)"


def plugin_reason(error: str) -> str:
    """The last non-empty line of an OpenVINO exception: the plugin's own reason, below its source locations."""
    return [line for line in error.splitlines() if line.strip()][-1].strip()


def crash_in_child(model: OpenVinoModel, example: torch.Tensor) -> str | None:
    """The signal that killed a child process running `model` once, or None when it ran (or raised an exception).

    OpenVINO's CPU plugin can die with a segmentation fault on a graph it compiled (seen on EfficientNet-B0's int8
    QDQ graph under AVX2-pinned oneDNN): no exception reaches Python, so the probe runs where a crash costs only
    the child, and the cell records a refusal instead of losing the process. Probed once per graph, input shape,
    configuration and kernel cap.
    """
    x = example[:1].detach().cpu().numpy()
    config = json.dumps(model.config(), sort_keys=True)
    key = hashlib.sha256(model.onnx_bytes + f"{x.shape}{config}{os.environ.get(ISA_CAP)}".encode()).hexdigest()
    if key not in _PROBED:
        with tempfile.TemporaryDirectory() as tmp:
            graph, data = Path(tmp) / "model.onnx", Path(tmp) / "input.npy"
            graph.write_bytes(model.onnx_bytes)
            np.save(data, x)
            code = subprocess.run([sys.executable, "-c", PROBE, str(graph), str(data), config],
                                  capture_output=True, timeout=900).returncode
        _PROBED[key] = signal.Signals(-code).name if code < 0 else None
    return _PROBED[key]


class _OpenVino(Runtime):
    precision_hint: str | None = "f32"

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            raise NotApplicableError(f"OpenVINO is not installed ({exc}); pip install openvino") from None
        only_in_executorch(model, "OpenVINO")
        if isinstance(model, OpenVinoModel):
            deployed = OpenVinoModel(model.onnx_bytes, self.precision_hint, threads, model.float_model,
                                     model.source_precision)
        elif isinstance(model, OnnxModel):
            deployed = OpenVinoModel(model.onnx_bytes, self.precision_hint, threads, model.float_model,
                                     model.precision)
        else:
            deployed = OpenVinoModel(export_onnx(model, example), self.precision_hint, threads, model)
        crashed = crash_in_child(deployed, example)
        if crashed:
            raise NotApplicableError(self.refusal(f"the plugin crashed the process running it ({crashed})"))
        try:   # compiled here, so a graph the plugin has no kernels for is refused with its reason, not a crash later
            _ = deployed.compiled
        except RuntimeError as exc:
            raise NotApplicableError(self.refusal(str(exc))) from None
        return deployed

    def refusal(self, error: str) -> str:
        capped = os.environ.get(ISA_CAP)
        pinned = f" with the kernels pinned ({ISA_CAP}={capped})" if capped else ""
        return f"OpenVINO's CPU plugin cannot run this graph{pinned}: {plugin_reason(error)}"

    def file_bytes(self, deployed: nn.Module) -> int | None:
        return deployed.ir_bytes() if isinstance(deployed, OpenVinoModel) else None

    def describe(self, deployed: nn.Module) -> dict[str, Any]:
        if not isinstance(deployed, OpenVinoModel):
            return {}
        return {"precision_hint": deployed.precision_hint or "default",
                "inference_precision": deployed.inference_precision(),
                "layer_precisions": deployed.layer_precisions()}


@register_runtime("openvino")
class OpenVino(_OpenVino):
    """OpenVINO CPU plugin, float layers at the f32 precision hint (like for like with the other float runtimes)."""

    precision_hint = "f32"


@register_runtime("openvino-default")
class OpenVinoDefault(_OpenVino):
    """OpenVINO CPU plugin at its default precision (bf16 float layers on CPUs that have bf16 units)."""

    precision_hint = None

    def refusal(self, error: str) -> str:
        capped = os.environ.get(ISA_CAP)
        if not capped:
            return super().refusal(error)
        return (f"OpenVINO's default precision on this CPU cannot run this graph with the kernels pinned "
                f"({ISA_CAP}={capped}): {plugin_reason(error)}; {MEASURED_NATIVELY}")

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        deployed = super().deploy(model, example, threads)
        assert isinstance(deployed, OpenVinoModel)
        capped = os.environ.get(ISA_CAP)
        if capped and deployed.inference_precision() != "float32" \
                and any(p not in INT8_PRECISIONS for p in deployed.layer_precisions()):
            raise NotApplicableError(
                f"OpenVINO's default precision on this CPU is {deployed.inference_precision()}, which its oneDNN "
                f"cannot run with the kernels pinned ({ISA_CAP}={capped}); {MEASURED_NATIVELY}")
        return deployed


def int8_layers(layer_precisions: dict[str, int]) -> int:
    return sum(n for precision, n in layer_precisions.items() if precision in INT8_PRECISIONS)
