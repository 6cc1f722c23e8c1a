"""The field's own post-training int8 quantizers as methods, so a suite puts them beside slimbench's int8 on the same
trained model, calibration data and budget, and the harness measures them by the same rules.

Each peer runs with its tool's defaults, as a user following its documentation would; only the calibration set
(the same training-split samples slimbench's int8 calibrates on) and the model's ONNX export are shared. Each deploys
where its tool is meant to ship: ONNX Runtime's quantizer in ONNX Runtime, NNCF in OpenVINO.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx
from torch import nn
from torch.utils.data import DataLoader

from slimbench.core.params import bounded
from slimbench.deploy.onnx_export import OnnxModel, export_onnx, int8_kernel_count, optimized_op_counts
from slimbench.deploy.openvino_runtime import OpenVinoModel, int8_layers
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.methods.quantization import (
    LoaderCalibrationReader,
    even_batch,
    int8_outcome,
    quiet_quantizer,
    weight_summary,
)


@dataclass
class PeerInt8(Method):
    """What the peers share: the calibration set, the export, the honest int8 label."""

    family: ClassVar[str] = "peer"
    name: ClassVar[str]
    uses_finetune = False
    produces = "onnx-int8"
    calibration_samples: int = bounded(512, ge=1)   # drawn from the training split only, as quant.ptq_int8's

    def calibration(self, ctx: MethodContext) -> DataLoader:
        return ctx.task.calibration_dataloader(self.calibration_samples,
                                               batch_size=even_batch(self.calibration_samples))


@register_method("peer.ort_quantize_static")
@dataclass
class OrtQuantizeStatic(PeerInt8):
    """ONNX Runtime's `quantize_static` at its defaults (QDQ, per-tensor int8 weights and activations, MinMax)."""

    name: ClassVar[str] = "peer.ort_quantize_static"

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        from onnxruntime.quantization import quantize_static

        model = model.eval()
        fp32 = export_onnx(model, ctx.task.example_input(2))
        reader = LoaderCalibrationReader(self.calibration(ctx), onnx.load_from_string(fp32).graph.input[0].name)
        with tempfile.TemporaryDirectory() as tmp, quiet_quantizer():
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(fp32)
            quantize_static(str(src), str(out), reader)   # the tool's defaults, nothing else
            int8 = out.read_bytes()
        ops = optimized_op_counts(int8)
        info = {"summary": weight_summary(int8), "kernels": ops, "int8_kernels": int8_kernel_count(ops),
                "calibration": {"split": "train", "samples": self.calibration_samples},
                "tool": "onnxruntime.quantization.quantize_static, default arguments"}
        return int8_outcome(OnnxModel(int8, float_model=model, precision="int8"), info,
                            {"weight_bits": 8, "calibration_samples": self.calibration_samples})


@register_method("peer.nncf_int8")
@dataclass
class NncfInt8(PeerInt8):
    """NNCF's `quantize` at its defaults (performance preset, fast bias correction), deployed in OpenVINO."""

    name: ClassVar[str] = "peer.nncf_int8"

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        import nncf

        model = model.eval()
        fp32 = export_onnx(model, ctx.task.example_input(2))
        graph = onnx.load_from_string(fp32)
        input_name = graph.graph.input[0].name
        # NNCF's subset_size counts dataset items and its statistics expect one sample per item
        samples = [row[None] for batch in self.calibration(ctx) for row in batch[0].numpy()]
        with quiet_quantizer():
            quantized = nncf.quantize(graph, nncf.Dataset(samples, lambda x: {input_name: x}),
                                      subset_size=len(samples))
        int8 = quantized.SerializeToString()
        precisions = OpenVinoModel(int8, "f32", threads=1, float_model=model).layer_precisions()
        info = {"summary": weight_summary(int8), "openvino_layer_precisions": precisions,
                "int8_kernels": int8_layers(precisions),
                "calibration": {"split": "train", "samples": len(samples)},
                "tool": f"nncf.quantize (NNCF {nncf.__version__}, ONNX backend), default arguments"}
        return int8_outcome(OnnxModel(int8, float_model=model, precision="int8"), info,
                            {"weight_bits": 8, "calibration_samples": self.calibration_samples},
                            runtime="openvino", runtime_label="OpenVINO")
