"""Quantization: int8 static PTQ and QAT, dynamic int8, and 16-bit floats, deployed where their kernels run.

int8 models are ONNX Runtime QDQ graphs (per-channel symmetric int8 weights, calibrated per-tensor activations)
that ONNX Runtime fuses into int8 kernels (QLinearConv, QGemm, ...): the measured model stores int8 weights
and runs int8 arithmetic. QAT trains with torchao's PT2E fake quantization of the same scheme, then goes
through the same converter as PTQ, so the two differ only by the training.

What each method leaves (its `produces` form; none of them is a trainable "float" model, so a chain refuses a
torch method such as pruning or fine-tuning after them at parse time):
- "onnx-int8": an ONNX Runtime graph whose weight layers are int8 (quant.ptq_int8, quant.qat_int8,
  quant.dynamic_int8).
- "onnx-mixed": an ONNX Runtime graph with int8 and float32 weight layers, chosen per layer (quant.mixed).
- "float16": IEEE half-precision weights and compute, as an ONNX Runtime graph or a torch model behind float32
  casts (quant.fp16, by its `runtime`).
- "bfloat16": a bfloat16 torch model behind float32 casts (quant.bf16).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from collections.abc import Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn
from torch.utils.data import DataLoader

from slimbench.core.errors import ConfigError, NotApplicableError
from slimbench.core.params import added, bounded, check_ranges
from slimbench.deploy.casting import CastBoundary
from slimbench.deploy.onnx_export import (
    OnnxModel,
    export_onnx,
    initializer_arrays,
    int8_kernel_count,
    kernel_precisions,
    optimized_op_counts,
)
from slimbench.methods.base import Compute, Method, MethodContext, Outcome, register_method
from slimbench.methods.int8_recipe import choose_weights
from slimbench.tasks.base import MethodView, Task

OBSERVERS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}
ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
DYNAMIC_OPS = ("MatMul", "Gemm", "Gather", "Conv")
# The torch layers whose weights the export turns into each op type's weight input: what quantize_dynamic can reach.
DYNAMIC_LAYERS: dict[str, tuple[type[nn.Module], ...]] = {
    "MatMul": (nn.Linear,), "Gemm": (nn.Linear,), "Gather": (nn.Embedding, nn.EmbeddingBag),
    "Conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}
# what the static (QDQ) quantizer reaches: every layer whose weight the export makes some op's weight input
STATIC_LAYERS: tuple[type[nn.Module], ...] = tuple(dict.fromkeys(k for kinds in DYNAMIC_LAYERS.values() for k in kinds))
INT8_DTYPES = (np.int8, np.uint8)
MOSTLY_INT8 = 0.5        # below this share of int8 weights the model is mostly float: not labelled physical


class LoaderCalibrationReader(CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator the batches of a DataLoader (the task's training-split calibration loader)."""

    def __init__(self, loader: DataLoader, input_name: str):
        self.loader, self.input_name = loader, input_name
        self._batches: Iterator[Any] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = iter(self.loader)
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {self.input_name: batch[0].numpy()}

    def rewind(self) -> None:
        self._batches = None


def even_batch(samples: int, largest: int = 64) -> int:
    """The largest batch size <= `largest` dividing `samples`: ORT's histogram calibrators need equal batches."""
    return next(b for b in range(min(largest, samples), 0, -1) if samples % b == 0)


@dataclass
class WeightSummary:
    """What the ONNX graph really stores: weight elements by dtype and how weights are quantized."""

    int8_weights: int = 0
    float_weights: int = 0
    per_channel_weights: int = 0       # int8 weight tensors with one scale per output channel
    symmetric: bool = True             # every int8 weight has zero point 0
    float_weight_names: list[str] = field(default_factory=list)

    @property
    def int8_fraction(self) -> float:
        return self.int8_weights / max(self.int8_weights + self.float_weights, 1)


def weight_summary(onnx_bytes: bytes) -> WeightSummary:
    """Classify weight initializers (inputs of Conv/Gemm/MatMul/Gather or of a weight DequantizeLinear).

    A float weight may reach its MatMul through a Transpose (a Linear on a token sequence exports so, unfolded),
    which a quantizer may then quantize at run time like an activation: it is stored float all the same, and counts
    as that MatMul's float weight.
    """
    model = onnx.load_from_string(onnx_bytes)
    arrays = initializer_arrays(onnx_bytes)
    float_source: dict[str, str] = {}    # tensor computed from a float initializer by layout / quantize ops only
    for node in model.graph.node:
        if node.op_type in ("Transpose", "QuantizeLinear", "DequantizeLinear") and node.input:
            source = float_source.get(node.input[0], node.input[0])
            if source in arrays and arrays[source].dtype not in INT8_DTYPES:
                float_source[node.output[0]] = source
    out = WeightSummary()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in arrays and arrays[node.input[0]].ndim >= 2:
            w, scale = arrays[node.input[0]], arrays[node.input[1]]
            zp = arrays.get(node.input[2]) if len(node.input) > 2 else None
            out.int8_weights += w.size
            out.per_channel_weights += int(scale.size == w.shape[0] and scale.size > 1)
            out.symmetric &= zp is None or not np.any(zp)
        elif node.op_type in ("Conv", "Gemm", "MatMul", "Gather", "ConvTranspose"):
            idx = 0 if node.op_type == "Gather" else 1
            name = node.input[idx] if len(node.input) > idx else ""
            name = float_source.get(name, name)
            arr = arrays.get(name)
            if arr is None or arr.ndim < 2:
                continue
            if arr.dtype in INT8_DTYPES:
                out.int8_weights += arr.size
            else:
                out.float_weights += arr.size
                out.float_weight_names.append(name)
        elif node.op_type in ("GRU", "LSTM", "RNN"):   # input and recurrent matrices of a recurrent op left float
            for name in node.input[1:3]:
                arr = arrays.get(name)
                if arr is not None and arr.dtype not in INT8_DTYPES:
                    out.float_weights += arr.size
                    out.float_weight_names.append(name)
    # dynamic quantization keeps int8 weights as direct inputs of MatMulInteger / ConvInteger / Gather
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger"):
            arr = arrays.get(node.input[1])
            if arr is not None:
                zp = arrays.get(node.input[3]) if len(node.input) > 3 else None
                out.int8_weights += arr.size
                out.per_channel_weights += int(zp is not None and zp.size > 1)
                out.symmetric &= zp is None or not np.any(zp)
    return out


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer prints progress and logs advice on the root logger; keep run logs readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _ort_file(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def preprocess(fp32: bytes, tmp: Path) -> tuple[str, str]:
    """ONNX Runtime's recommended pre-quantization pass (shape inference, graph fusions); the path to quantize."""
    src, dst = _ort_file(tmp, "fp32.onnx", fp32), str(tmp / "pre.onnx")
    try:
        with quiet_quantizer():
            quant_pre_process(src, dst)
        return dst, "quant_pre_process"
    except Exception as exc:  # optional pass: quantizing the exported graph directly still works
        return src, f"skipped ({exc.__class__.__name__}: {str(exc)[:120]})"


@dataclass
class StaticInt8Params:
    """Static int8 settings shared by PTQ and QAT (ONNX Runtime QDQ, per-channel symmetric int8 weights)."""

    name: ClassVar[str]
    calibration_samples: int = bounded(512, ge=1)   # drawn from the training split only
    observer: Literal["minmax", "percentile", "entropy"] = "minmax"   # percentile/entropy are histogram-based
    percentile: float = bounded(99.999, gt=90.0, le=100.0)   # for observer: percentile
    activations: Literal["uint8", "int8"] = "uint8"   # uint8 x int8 is ONNX Runtime's fast x86 path (U8S8)
    # 7-bit weights. Not needed for exact results on CPUs without VNNI: every session gets ONNX Runtime's exact
    # U8U8 kernels where its U8S8 kernel saturates (deploy/ort_int8.py), with the full 8-bit weights
    reduce_range: bool = False
    # int8 weight scales: one per output channel, one per tensor (fewer scale multiplies, faster on some CPUs, more
    # rounding error), or "auto" (quant.ptq_int8): the faster of the two unless it costs validation accuracy
    weights: Literal["per_channel", "per_tensor", "auto"] = added("per_channel")

    def __post_init__(self) -> None:
        name = getattr(self, "name", type(self).__name__)
        check_ranges(self, name)
        if self.weights == "auto" and name != "quant.ptq_int8":
            raise ConfigError(f"{name}: weights: auto is quant.ptq_int8's (it measures both granularities after "
                              f"calibration); choose per_channel or per_tensor")
        if self.weights != "per_channel" and name == "quant.qat_int8":
            raise ConfigError(f"{name}: weights must be per_channel, the granularity its fake-quant training "
                              f"learns under (torchao's X86InductorQuantizer); got {self.weights!r}")

    def not_applicable(self, model: nn.Module) -> str | None:
        """Refused where the int8 graph would be mostly float: the static quantizer reaches conv, linear and
        embedding weights only (ONNX Runtime's QDQ quantizer has no recurrent op), so a recurrent model keeps most
        of its weights fp32 and an int8 label would misstate it."""
        weights = {id(w): w for m in model.modules()   # a tied weight once
                   if isinstance(m, STATIC_LAYERS) and isinstance(w := m.weight, torch.Tensor)}
        reached = sum(w.numel() for w in weights.values())
        matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
        if reached >= MOSTLY_INT8 * matrices:
            return None
        rest = sorted({f"{n} ({type(m).__name__})" for n, m in model.named_modules()
                       if not isinstance(m, STATIC_LAYERS) and any(p.dim() >= 2 for p in m.parameters(recurse=False))})
        return (f"static int8 reaches only Conv/Linear/Embedding weights, {reached} of {matrices} here "
                f"({reached / max(matrices, 1):.0%}), so the model would stay mostly float; the rest are in "
                f"{', '.join(rest)}, which ONNX Runtime's static int8 quantizer does not quantize")


class StaticInt8Graph:
    """A model exported, pre-processed and calibrated once, then quantized to QDQ int8 as often as needed.

    PTQ quantizes once; quant.mixed quantizes the same graph dozens of times with different layers left in
    float (`nodes_to_quantize` / `nodes_to_exclude`). Calibration is the slow part, so the first quantization
    writes ONNX Runtime's calibration cache and every later one reads the same ranges from it.
    """

    def __init__(self, model: nn.Module, task: Task | MethodView, p: StaticInt8Params, tmp: Path):
        self.p, self.tmp = p, tmp
        fp32 = export_onnx(model, task.example_input(2))
        self.loader = task.calibration_dataloader(p.calibration_samples, batch_size=even_batch(p.calibration_samples))
        self.reader = LoaderCalibrationReader(self.loader, onnx.load_from_string(fp32).graph.input[0].name)
        self.source, self.preprocess = preprocess(fp32, tmp)
        self.cache = tmp / "calibration.json"
        self.quantizations = 0

    @property
    def float_bytes(self) -> bytes:
        """The float graph every quantization starts from (after pre-processing, e.g. BatchNorm folded)."""
        return Path(self.source).read_bytes()

    def quantize(self, nodes_to_quantize: list[str] | None = None, nodes_to_exclude: list[str] | None = None,
                 per_channel: bool | None = None) -> bytes:
        """QDQ int8 graph; only `nodes_to_quantize` (None = every node ONNX Runtime can) minus `nodes_to_exclude`;
        weight scales per channel unless the settings (or `per_channel`) say per tensor."""
        p = self.p
        per_channel = p.weights != "per_tensor" if per_channel is None else per_channel
        out = self.tmp / f"int8_{self.quantizations}.onnx"
        self.quantizations += 1
        with quiet_quantizer():
            quantize_static(
                self.source, out, self.reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=p.reduce_range, activation_type=ACTIVATION_TYPES[p.activations],
                weight_type=QuantType.QInt8, calibrate_method=OBSERVERS[p.observer],
                nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=nodes_to_exclude,
                calibration_cache_path=self.cache,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": p.activations == "int8",
                               "CalibPercentile": p.percentile,
                               # float32 biases in the file (ORT makes the int32 kernel bias when it loads the model):
                               # 4 bytes per channel instead of int32 bias + its own scale + zero point (12 bytes)
                               "QuantizeBias": False},
            )
        data = out.read_bytes()
        out.unlink()
        return data

    def details(self) -> dict[str, Any]:
        """How the graph was calibrated and quantized, for the record."""
        p = self.p
        return {
            "calibration": {"split": "train", "samples": len(cast(Sized, self.loader.dataset)), "observer": p.observer,
                            **({"percentile": p.percentile} if p.observer == "percentile" else {})},
            "preprocess": self.preprocess, "format": "QDQ", "activations": p.activations,
            "reduce_range": p.reduce_range, **({"weights": p.weights} if p.weights != "per_channel" else {}),
        }


@contextlib.contextmanager
def static_int8_graph(model: nn.Module, task: Task | MethodView, p: StaticInt8Params) -> Iterator[StaticInt8Graph]:
    """A `StaticInt8Graph` whose files (pre-processed graph, calibration cache) live only inside the block."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        yield StaticInt8Graph(model, task, p, Path(tmp_dir))


def static_int8(model: nn.Module, task: Task | MethodView, p: StaticInt8Params,
                name: str) -> tuple[OnnxModel, dict[str, Any]]:
    """Export, calibrate on training data and quantize to a QDQ int8 ONNX model; the model plus a report."""
    with static_int8_graph(model, task, p) as graph:
        int8 = graph.quantize()
        details = graph.details()
    return int8_outcome_parts(int8, model, name, details)


def int8_outcome_parts(int8: bytes, float_model: nn.Module, name: str, details: dict[str, Any],
                       precision: str = "int8") -> tuple[OnnxModel, dict[str, Any]]:
    """The deployable int8 graph and what it really holds (weights by dtype, kernels ORT runs); refuses a float
    graph."""
    summary = weight_summary(int8)
    if summary.int8_weights == 0:
        raise NotApplicableError(
            f"{name}: ONNX Runtime quantized no weights of {type(float_model).__name__} (no Conv/Gemm/MatMul/"
            f"Gather layer it can quantize); refusing to report a float model as int8"
        )
    ops = optimized_op_counts(int8)
    return OnnxModel(int8, float_model=float_model, precision=precision), {
        **details,
        "summary": summary,
        "kernels": ops,
        "int8_kernels": int8_kernel_count(ops),
    }


def int8_outcome(onnx_model: OnnxModel, info: dict[str, Any], requested: dict[str, Any],
                 runtime: str = "onnxruntime", runtime_label: str = "ONNX Runtime") -> Outcome:
    """`physical` only when int8 kernels run and hold most weights; otherwise the label says what really runs.

    `info["int8_kernels"]` counts the int8 kernels `runtime` executes for this graph (read from that runtime)."""
    summary: WeightSummary = info.pop("summary")
    fraction = summary.int8_fraction
    compute: Compute
    if info["int8_kernels"] == 0:
        compute = "simulated"
        deployed = f"{runtime_label} QDQ graph without fused int8 kernels (dequantize + float compute)"
    elif fraction < MOSTLY_INT8:
        compute = "dense"
        deployed = f"{runtime_label}: int8 kernels for {fraction:.1%} of weights, float kernels for the rest"
    else:
        compute = "physical"
        deployed = f"{runtime_label} int8 kernels ({fraction:.1%} of weights int8)"
    bits = round(8 * fraction + 32 * (1 - fraction), 3)   # per stored weight: int8 share and float32 rest
    arithmetic = {"int8_arithmetic": onnx_model.int8_arithmetic()} if runtime == "onnxruntime" else {}
    return Outcome(
        onnx_model,
        compute=compute,
        runtime=runtime,
        requested=requested,
        achieved={"weight_bits": bits, "int8_weight_fraction": round(fraction, 6),
                  "per_channel_weight_tensors": summary.per_channel_weights, "symmetric_weights": summary.symmetric,
                  "int8_kernels": info["int8_kernels"]},
        details={**info, "float_weights": summary.float_weight_names, "runtime": runtime, "deployed": deployed,
                 **arithmetic},
    )


@register_method("quant.ptq_int8")
@dataclass
class PtqInt8(StaticInt8Params, Method):
    """Static post-training int8 quantization (ONNX Runtime QDQ), calibrated on training batches."""

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "quant.ptq_int8"
    version: ClassVar[int] = 2              # 2: exact int8 arithmetic on every CPU (deploy/ort_int8.py)
    uses_finetune = False
    produces = "onnx-int8"

    # weights: auto keeps per-tensor only if it loses at most this much validation accuracy (a fraction)
    auto_max_accuracy_drop: float = added(0.002, ge=0.0, le=1.0)
    auto_validation_samples: int = added(3000, ge=1)

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        requested = {"weight_bits": 8, "observer": self.observer, "calibration_samples": self.calibration_samples}
        if self.weights != "auto":
            onnx_model, info = static_int8(model, ctx.task, self, self.name)
            return int8_outcome(onnx_model, info, requested)
        with static_int8_graph(model, ctx.task, self) as graph:
            graphs = {"per_channel": graph.quantize(per_channel=True), "per_tensor": graph.quantize(per_channel=False)}
            details = graph.details()
        n = self.auto_validation_samples
        chosen, recipe = choose_weights(graphs, ctx.task.val.x[:n], ctx.task.val.y[:n], ctx.task.example_input(1),
                                        self.auto_max_accuracy_drop)
        onnx_model, info = int8_outcome_parts(graphs[chosen], model, self.name, {**details, "recipe": recipe})
        return int8_outcome(onnx_model, info, {**requested, "weights": "auto"})


def prepare_qat(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """torchao PT2E QAT graph: fake-quantized per-channel symmetric int8 weights (conv-BN folding simulated)
    and uint8 per-tensor activations, the scheme ONNX Runtime's QDQ int8 kernels run."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    model.train()
    try:
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    except Exception as exc:
        raise NotApplicableError(
            f"quant.qat_int8: torch.export cannot capture {type(model).__name__} for PT2E QAT: "
            f"{exc.__class__.__name__}: {str(exc).strip()[:200]}"
        ) from None
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported, quantizer)
    allow_exported_model_train_eval(prepared)
    return prepared


@register_method("quant.qat_int8")
@dataclass
class QatInt8(StaticInt8Params, Method):
    """Quantization-aware fine-tuning from the trained baseline, then the same int8 conversion as PTQ.

    The weights learn under fake-quantized int8 (PT2E); the deployed ranges are then calibrated by the same
    ONNX Runtime quantizer as PTQ, so a PTQ/QAT comparison isolates what the training changed.
    """

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "quant.qat_int8"
    version: ClassVar[int] = 2              # 2: exact int8 arithmetic on every CPU (deploy/ort_int8.py)
    produces = "onnx-int8"
    epochs: int | None = None            # None = the suite's fine-tune budget
    max_train_batches: int | None = None  # cap per epoch: fake-quant training is ~10x slower than float on CPU

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        budget = dataclasses.replace(ctx.budget, epochs=self.epochs or ctx.budget.epochs,
                                     max_train_batches=self.max_train_batches or ctx.budget.max_train_batches)
        qat = prepare_qat(model, ctx.task.example_input(8))
        trained = ctx.finetune(qat, cfg=budget)
        state = trained.state_dict()
        missing = [k for k in model.state_dict() if k not in state]
        if missing:
            raise NotApplicableError(f"quant.qat_int8: QAT graph lost parameters {missing[:5]}")
        model.load_state_dict({k: state[k] for k in model.state_dict()})  # trained float weights, no observers
        onnx_model, info = static_int8(model.eval(), ctx.task, self, "quant.qat_int8")
        info["qat"] = {"epochs": budget.epochs, "max_train_batches": budget.max_train_batches, "lr": budget.lr,
                       "fake_quant": "torchao PT2E (X86InductorQuantizer)"}
        return int8_outcome(onnx_model, info, {"weight_bits": 8, "observer": self.observer,
                                                "calibration_samples": self.calibration_samples,
                                                "qat_epochs": budget.epochs})


@register_method("quant.dynamic_int8")
@dataclass
class DynamicInt8(Method):
    """Dynamic int8 (ONNX Runtime): int8 weights, activations quantized per batch at run time; no calibration.

    Meant for Linear/Embedding-heavy parts (MatMul, Gemm, Gather); add "Conv" to quantize convolutions too
    (ConvInteger, usually slower than float on CPU).
    """

    family: ClassVar[str] = "quantization"
    name: ClassVar[str] = "quant.dynamic_int8"
    uses_finetune = False
    produces = "onnx-int8"
    # 2: claims the average bits of its int8 and float weights, not 8; 3: exact int8 arithmetic on every CPU
    version: ClassVar[int] = 3
    op_types: list[str] = field(default_factory=lambda: ["MatMul", "Gemm", "Gather"])
    per_channel: bool = True

    def __post_init__(self) -> None:
        bad = sorted(set(self.op_types) - set(DYNAMIC_OPS))
        if bad or not self.op_types:
            raise ConfigError(f"quant.dynamic_int8: op_types {bad or '[]'} not supported; "
                              f"choose from {list(DYNAMIC_OPS)}")

    def dynamic_layers(self, model: nn.Module) -> list[str]:
        """The layers whose weights quantize_dynamic would make int8 for `op_types`."""
        kinds = tuple(kind for op in self.op_types for kind in DYNAMIC_LAYERS[op])
        return [name for name, module in model.named_modules() if isinstance(module, kinds)]

    def not_applicable(self, model: nn.Module) -> str | None:
        if self.dynamic_layers(model):
            return None
        return (f"{type(model).__name__} has no layer it quantizes for op_types {list(self.op_types)} "
                f"({', '.join(sorted({k.__name__ for op in self.op_types for k in DYNAMIC_LAYERS[op]}))})")

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        self.require_applicable(model)
        fp32 = export_onnx(model, ctx.task.example_input(2))
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            out = tmp / "dynamic.onnx"
            with quiet_quantizer():
                quantize_dynamic(_ort_file(tmp, "fp32.onnx", fp32), out, op_types_to_quantize=list(self.op_types),
                                 per_channel=self.per_channel, weight_type=QuantType.QInt8)
            int8 = out.read_bytes()
        onnx_model, info = int8_outcome_parts(int8, model, "quant.dynamic_int8", {"format": "dynamic (IntegerOps)"})
        return int8_outcome(onnx_model, info, {"weight_bits": 8, "op_types": list(self.op_types)})


@dataclass
class ReducedPrecision(Method):
    """16-bit float weights and compute (casts at the model boundary), in torch eager or ONNX Runtime."""

    family: ClassVar[str] = "quantization"
    uses_finetune = False
    dtype: ClassVar[torch.dtype]
    runtime: Literal["eager", "onnxruntime"] = "eager"

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        bits = {"weight_bits": 16, "dtype": str(self.dtype).removeprefix("torch.")}
        if self.runtime == "eager":
            return Outcome(CastBoundary(model.eval(), self.dtype), compute="physical", runtime="eager",
                           requested=bits, achieved=bits, details={"runtime": "eager", "compute_dtype": bits["dtype"]})
        if self.dtype != torch.float16:
            raise NotApplicableError(
                f"{bits['dtype']} in ONNX Runtime: the float16 converter (onnxruntime.transformers.float16) has no "
                f"{bits['dtype']} mode; use runtime: eager"
            )
        from onnxruntime.transformers.float16 import convert_float_to_float16

        fp32 = export_onnx(model, ctx.task.example_input(2))
        fp16 = convert_float_to_float16(onnx.load_from_string(fp32), keep_io_types=True).SerializeToString()
        ops = optimized_op_counts(fp16)
        boundary = sum(1 for n in onnx.load_from_string(fp16).graph.node if n.op_type == "Cast")
        # ONNX Runtime's CPU provider has no float16 convolution: it casts such weights to float32 when it loads
        # the graph, so only the storage is 16-bit there; claim 16-bit compute only where 16-bit kernels run
        precisions = kernel_precisions(fp16)
        half = precisions.get("float16", 0) > 0
        return Outcome(
            OnnxModel(fp16, float_model=model, precision="float16"), compute="physical" if half else "dense",
            runtime="onnxruntime", requested=bits, achieved=bits,
            details={"runtime": "onnxruntime", "kernels": ops, "kernel_precisions": precisions,
                     "casts_inserted_by_runtime": max(ops.get("Cast", 0) - boundary, 0),
                     "deployed": "float16 kernels" if half else "float16 storage, float32 kernels (weights cast "
                                                                "on load)"},
        )


@register_method("quant.fp16")
@dataclass
class Float16(ReducedPrecision):
    """IEEE float16 weights; ONNX Runtime by default (torch eager float16 convolutions are very slow on CPU)."""

    dtype: ClassVar[torch.dtype] = torch.float16
    produces = "float16"
    version: ClassVar[int] = 2              # 2: in ONNX Runtime on CPU, claims float32 compute (weights cast on load)
    runtime: Literal["eager", "onnxruntime"] = "onnxruntime"


@register_method("quant.bf16")
@dataclass
class BFloat16(ReducedPrecision):
    """bfloat16 weights and compute in torch eager (float32's range, 8-bit mantissa)."""

    dtype: ClassVar[torch.dtype] = torch.bfloat16
    produces = "bfloat16"
