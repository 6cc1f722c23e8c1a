"""The field's own post-training int8 quantizers as methods, so a suite puts them beside slimbench's int8 on the same
trained model, calibration data and budget, and the harness measures them by the same rules.

Each peer runs with its tool's defaults, as a user following its documentation would; only the calibration set
(the same training-split samples slimbench's int8 calibrates on) and the model's ONNX export are shared. Each deploys
where its tool is meant to ship: ONNX Runtime's quantizer in ONNX Runtime, NNCF in OpenVINO, ExecuTorch's XNNPACK
quantizer (PT2E, from the torch model, not the ONNX export) in ExecuTorch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
from torch import nn
from torch.utils.data import DataLoader

from slimbench.core.errors import NotApplicableError
from slimbench.core.params import bounded
from slimbench.deploy.executorch_runtime import (
    MIN_MAX_BATCH,
    ExecutorchModel,
    export_program,
    lower_program,
    program_contents,
)
from slimbench.deploy.onnx_export import OnnxModel, export_onnx, int8_kernel_count, optimized_op_counts
from slimbench.deploy.openvino_runtime import OpenVinoModel, int8_layers
from slimbench.methods.base import Compute, Method, MethodContext, Outcome, register_method
from slimbench.methods.quantization import (
    MOSTLY_INT8,
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


@register_method("peer.xnnpack_int8")
@dataclass
class XnnpackInt8(PeerInt8):
    """ExecuTorch's own int8 flow at its documented defaults: PT2E with the XNNPACKQuantizer (symmetric, per-channel
    int8 weights, int8 activations), calibrated, lowered to the XNNPACK delegate, run in ExecuTorch."""

    name: ClassVar[str] = "peer.xnnpack_int8"
    produces = "executorch-int8"

    def not_applicable(self, model: nn.Module) -> str | None:
        if any(isinstance(m, nn.RNNBase) for m in model.modules()):   # measured with ExecuTorch 1.5.1 on `gru`
            return ("ExecuTorch cannot lower a recurrent layer with a dynamic batch axis (to_executorch's memory "
                    "planning: '_ViewSpec is incompatible with its base on creation. It has shape_dynamism=0, but its "
                    "base has shape_dynamism=1')")
        return None

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from executorch.version import __version__ as et_version
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        model = model.eval()
        example = ctx.task.example_input(2)
        max_batch = MIN_MAX_BATCH   # the batch axis the runtime's float programs have too
        try:
            exported = export_program(model, example, max_batch)
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            with quiet_quantizer():
                prepared = prepare_pt2e(exported.module(), quantizer)
                for batch in self.calibration(ctx):
                    prepared(batch[0])
                pte = lower_program(convert_pt2e(prepared), example, max_batch)
        except Exception as exc:   # export and lowering raise many types; the reason is what the record needs
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise NotApplicableError(f"{self.name}: ExecuTorch's PT2E flow cannot take {type(model).__name__}: "
                                     f"{exc.__class__.__name__}: {first}") from None
        contents = program_contents(pte)
        weights = [c for c in contents.constants if len(c.shape) >= 2]
        total = sum(int(np.prod(c.shape)) for c in weights)
        int8 = sum(int(np.prod(c.shape)) for c in weights if c.dtype == "int8")
        if int8 == 0:
            raise NotApplicableError(f"{self.name}: the XNNPACK quantizer quantized no weights of "
                                     f"{type(model).__name__}; refusing to report a float program as int8")
        fraction = int8 / total
        int8_kernels = contents.kernels.get("int8", 0)
        compute: Compute = "physical" if int8_kernels and fraction >= MOSTLY_INT8 else "dense"
        per_channel = sum(1 for c in weights if c.dtype == "int8" and c.scale_bytes > 4)
        return Outcome(
            ExecutorchModel(pte, max_batch, None, float_model=model, precision="int8"),
            compute=compute,
            runtime="executorch",
            requested={"weight_bits": 8, "calibration_samples": self.calibration_samples},
            achieved={"weight_bits": round(8 * fraction + 32 * (1 - fraction), 3),
                      "int8_weight_fraction": round(fraction, 6), "per_channel_weight_tensors": per_channel,
                      "int8_kernels": int8_kernels},
            details={"kernels": contents.kernels, "delegated_nodes": contents.delegated_nodes,
                     "program_operators": list(contents.operators), "pte_bytes": len(pte),
                     "calibration": {"split": "train", "samples": self.calibration_samples},
                     "tool": f"ExecuTorch {et_version} XNNPACKQuantizer (get_symmetric_quantization_config("
                             f"is_per_channel=True)), torchao prepare_pt2e / convert_pt2e, XnnpackPartitioner",
                     "runtime": "executorch",
                     "deployed": f"ExecuTorch XNNPACK int8 kernels ({fraction:.1%} of weights int8)"
                     if compute == "physical" else
                     f"ExecuTorch: int8 weights for {fraction:.1%}, {int8_kernels} int8 kernels"},
        )
