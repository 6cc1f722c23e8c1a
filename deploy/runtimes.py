"""Runtimes a model is measured in, its stored form and its artifact.

The built-in runtimes register here: PyTorch eager, ONNX Runtime and torch.compile, and (their own modules)
OpenVINO and ExecuTorch. The runtime a method deploys its model in (`Outcome.runtime`) gives the headline latency
and is where accuracy is measured. Timing a model in every runtime beside the baseline is
`slimbench.deploy.latency`'s job.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from slimbench.core.errors import ConfigError, NotApplicableError, StoredFormError, UnknownNameError
from slimbench.deploy.executorch_runtime import (
    EXECUTORCH_PAYLOAD_KEY,
    ExecutorchModel,
    check_program,
    lower_to_xnnpack,
    only_in_executorch,
    program_from_payload,
    program_packed,
)
from slimbench.deploy.onnx_export import (
    ONNX_PAYLOAD_KEY,
    OnnxModel,
    export_onnx,
    onnx_from_payload,
    onnx_packed,
    optimized_graph,
)
from slimbench.deploy.packing import Packed, pack_state_dict, unpack_state_dict
from slimbench.deploy.runtime_registry import RUNTIMES, Runtime, register_runtime
from slimbench.deploy.structure import load_into


@register_runtime("eager")
class Eager(Runtime):
    """PyTorch eager execution of the torch module itself."""

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        if isinstance(model, OnnxModel):
            raise NotApplicableError(f"this {model.precision} ONNX Runtime graph has no eager form")
        only_in_executorch(model, "eager")
        return model


@register_runtime("onnxruntime")
class OnnxRuntime(Runtime):
    """ONNX Runtime's CPU provider on the model's ONNX export (or the graph a method produced), all optimisations."""

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        if isinstance(model, OnnxModel):
            return model.with_threads(threads)
        only_in_executorch(model, "ONNX Runtime")
        return OnnxModel(export_onnx(model, example), float_model=model, threads=threads)

    def file_bytes(self, deployed: nn.Module) -> int | None:
        return len(deployed.onnx_bytes) if isinstance(deployed, OnnxModel) else None

    def describe(self, deployed: nn.Module) -> dict[str, Any]:
        return {"precision": deployed.precision} if isinstance(deployed, OnnxModel) else {}


@register_runtime("compile")
class Compile(Runtime):
    """torch.compile (Inductor) of the torch module; compiled on first call, so only where a method deploys there."""

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        if isinstance(model, OnnxModel):
            raise NotApplicableError(f"this {model.precision} ONNX Runtime graph has no compile form")
        only_in_executorch(model, "torch.compile")
        return cast(nn.Module, torch.compile(model))   # a module compiles to a module (OptimizedModule)


def check_runtime(name: str) -> str:
    get_runtime(name)   # the unknown-name error lists the registered runtimes
    return name


def deploy(model: nn.Module, runtime: str, example: torch.Tensor, threads: int | None) -> nn.Module:
    """`model` as it runs in `runtime` (checked on `example`); NotApplicableError says why it cannot run there."""
    target = get_runtime(runtime)
    deployed = target.deploy(model, example, threads)
    if deployed is model:
        return model
    try:
        with torch.inference_mode():
            deployed(example[:1])   # builds the session / compiles now, so failures surface here with a reason
    except NotApplicableError:
        raise
    except Exception as exc:
        raise NotApplicableError(
            f"{runtime} cannot run {type(model).__name__}: {exc.__class__.__name__}: {str(exc).strip()[:300]}"
        ) from None
    return deployed


def torch_form(model: nn.Module) -> nn.Module:
    """The torch module that parameters and MACs are counted on (an ONNX graph or an ExecuTorch program counts its
    source architecture)."""
    if isinstance(model, (OnnxModel, ExecutorchModel)):
        if model.float_model is None:
            raise NotApplicableError(f"a {type(model).__name__} without its source torch model cannot be counted")
        return model.float_model
    return model


def stored_form(model: nn.Module) -> Packed:
    """The real stored representation: ONNX initializers for an ONNX graph, the `.pte` file for an ExecuTorch
    program, the packed state dict otherwise."""
    if isinstance(model, OnnxModel):
        return onnx_packed(model.onnx_bytes)
    if isinstance(model, ExecutorchModel):
        return program_packed(model)
    return pack_state_dict(model.state_dict())


def check_packed(packed: Packed, model: nn.Module) -> None:
    """A stored form must decode to the weights that were measured, to its format's precision, or the cell fails.

    Checked before a byte is counted: the form is a `Packed` (with the weight-free graph for an ONNX Runtime model,
    and only then), it stores exactly the model's tensors (state dict, or the graph's initializers), every encoding is
    well formed, and every decoded tensor equals the model's: exactly for the value formats (in a dtype holding both,
    so a narrower stored dtype passes only where it holds the model's weights exactly), integers, zero points and
    axis exactly and scales at their stored float32 for the quantized formats (deploy.packing lists each format's
    precision). Anything else is a StoredFormError naming the tensor, its format and what differs.
    """
    if not isinstance(packed, Packed):
        raise StoredFormError(f"a method's Outcome.packed must be a slimbench Packed (deploy.packing), got "
                              f"{type(packed).__name__}")
    if isinstance(model, ExecutorchModel):
        check_program(packed, model)
        return
    if getattr(packed, "program", None):
        raise StoredFormError("it carries an ExecuTorch program, but the model is not one")
    if isinstance(model, OnnxModel):
        expected = {k: torch.from_numpy(v.copy()) for k, v in model.initializers().items()}
        _check_onnx_graph(packed, model)
    else:
        expected = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        if getattr(packed, "graph", None):
            raise StoredFormError("it carries an ONNX graph, but the model is a torch model (its artifact would "
                                  "reload as an ONNX Runtime graph)")
    if not isinstance(packed.meta, dict):
        raise StoredFormError(f"its metadata must be a mapping, got {type(packed.meta).__name__}")
    missing, extra = sorted(set(expected) - set(packed.meta)), sorted(set(packed.meta) - set(expected), key=str)
    if missing or extra:
        raise StoredFormError(
            f"it does not hold exactly the model's {len(expected)} tensors: "
            + "; ".join(f"{what} {len(names)} ({', '.join(map(repr, names[:5]))}{', ...' if len(names) > 5 else ''})"
                        for what, names in (("missing", missing), ("extra", extra)) if names),
            missing[0] if missing else str(extra[0]))
    for name, tensor in expected.items():   # before decoding: a wrong shape is named as such, and never allocated
        meta = packed.meta[name]
        shape = meta.get("shape") if isinstance(meta, dict) else None
        if isinstance(shape, (list, tuple)) and list(shape) != list(tensor.shape):
            raise StoredFormError(f"stored shape {list(shape)}, but the model's tensor has shape {list(tensor.shape)}",
                                  name, meta.get("format"))
    decoded = unpack_state_dict(packed)
    for name, tensor in expected.items():
        _check_decoded(name, packed.meta[name]["format"], decoded[name], tensor.detach().cpu())


def _check_onnx_graph(packed: Packed, model: OnnxModel) -> None:
    """An ONNX model's artifact is the weight-free graph plus the packed initializers: the graph must be the model's."""
    import onnx

    graph = getattr(packed, "graph", None)
    if not isinstance(graph, bytes) or not graph:
        raise StoredFormError("the model is an ONNX Runtime graph, but the stored form carries no graph to rebuild it "
                              "from (use deploy.onnx_export.onnx_packed)")
    own = onnx.load_from_string(model.onnx_bytes)
    del own.graph.initializer[:]
    try:
        stored = onnx.load_from_string(graph)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise StoredFormError(f"its ONNX graph does not parse ({exc.__class__.__name__}: {exc})") from None
    if stored != own:
        raise StoredFormError("its ONNX graph is not the model's graph (without its initializers)")


def _check_decoded(name: str, fmt: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """`got` (decoded) equals `want` (the model's tensor) to the precision of format `fmt`."""
    def fail(problem: str) -> None:
        raise StoredFormError(problem, name, fmt)

    def kind(t: torch.Tensor) -> str:
        return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}"

    if got.shape != want.shape:
        fail(f"it decodes to {kind(got)}, but the model's tensor is {kind(want)}")
    if got.is_quantized or want.is_quantized:
        if not (got.is_quantized and want.is_quantized) or got.dtype != want.dtype:
            fail(f"it decodes to a {kind(got)} tensor, but the model's tensor is {kind(want)}")
        per_channel = {torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams}
        if (got.qscheme() in per_channel) != (want.qscheme() in per_channel):
            fail(f"it decodes to qscheme {got.qscheme()}, but the model's tensor has {want.qscheme()}")
        if got.qscheme() in per_channel:
            if got.q_per_channel_axis() != want.q_per_channel_axis():
                fail(f"it is quantized along axis {got.q_per_channel_axis()}, the model's tensor along "
                     f"{want.q_per_channel_axis()}")
            params = {"scales": (got.q_per_channel_scales(), want.q_per_channel_scales()),
                      "zero points": (got.q_per_channel_zero_points(), want.q_per_channel_zero_points())}
        else:
            params = {"scales": (torch.tensor([got.q_scale()]), torch.tensor([want.q_scale()])),
                      "zero points": (torch.tensor([got.q_zero_point()]), torch.tensor([want.q_zero_point()]))}
        for what, (a, b) in params.items():
            if what == "scales":   # stored as float32: the format's precision for scales
                a, b = a.float(), b.float()
            if not torch.equal(a.long() if what == "zero points" else a, b.long() if what == "zero points" else b):
                fail(f"its {what} {a.tolist()[:4]} differ from the model's {b.tolist()[:4]}")
        got, want, values = got.int_repr(), want.int_repr(), "integer values"
    else:
        values = "values"
    common = torch.promote_types(got.dtype, want.dtype)
    a, b = got.to(common), want.to(common)
    same = a == b
    if a.is_floating_point() or a.is_complex():
        same |= torch.isnan(a) & torch.isnan(b)
    if bool(same.all()):
        return
    wrong = (~same).reshape(-1)
    first = int(wrong.nonzero()[0])
    index = tuple(int(i) for i in np.unravel_index(first, tuple(want.shape))) if want.dim() else ()
    diff = (a.reshape(-1)[wrong].double() - b.reshape(-1)[wrong].double()).abs().max().item() \
        if not common.is_complex else float("nan")
    problem = (f"{int(wrong.sum())} of {want.numel()} {values} differ from the model's weights (first at index "
               f"{index}: stored {a.reshape(-1)[first].item()!r}, model {b.reshape(-1)[first].item()!r}; "
               f"largest difference {diff:.6g})")
    if got.dtype != want.dtype and got.is_floating_point() and want.is_floating_point():
        lossy = int((want.to(got.dtype).to(want.dtype) != want).sum())
        if lossy:
            dt = str(got.dtype).removeprefix("torch.")
            problem += (f"; stored as {dt}, which does not hold {lossy} of the model's "
                        f"{str(want.dtype).removeprefix('torch.')} weights: store the dtype the model computes in, or "
                        f"round the model's weights to {dt} before it is measured")
    fail(problem)


def reference_stored_like(reference: nn.Module, example: torch.Tensor) -> Packed:
    """The fp32 reference in the stored form of an ONNX graph (whichever runtime reads it): exported the same way
    and optimised by ONNX Runtime's basic level (constant folding, BatchNorm folded into convolutions), as an int8
    graph is."""
    return onnx_packed(optimized_graph(export_onnx(reference, example), level="basic").SerializeToString())


def reference_program_like(reference: nn.Module, example: torch.Tensor, model: ExecutorchModel) -> Packed:
    """The fp32 reference in the stored form of an ExecuTorch program: lowered to XNNPACK the same way (same batch
    axis), its `.pte` file."""
    return program_packed(ExecutorchModel(lower_to_xnnpack(reference.eval(), example, model.max_batch), model.max_batch,
                                          None, reference))


def load_artifact(data: bytes, fresh_model: Callable[[], nn.Module]) -> nn.Module:
    """A saved cell artifact back as a runnable model (never unpickles code: `weights_only=True`)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if EXECUTORCH_PAYLOAD_KEY in payload:
        return program_from_payload(payload)
    if ONNX_PAYLOAD_KEY in payload:
        return OnnxModel(onnx_from_payload(payload))
    state = unpack_state_dict(Packed.from_payload(payload))
    model = fresh_model()
    if "structure" in payload:
        return load_into(model, payload["structure"], state).eval()
    model.load_state_dict(state)
    return model.eval()


# the runtimes in their own modules register on import (they import their libraries only when they deploy)
from slimbench.deploy import openvino_runtime  # noqa: E402, F401


# read the registry here, where every built-in runtime has registered
def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise UnknownNameError("runtime", name, RUNTIMES.names())
    return RUNTIMES.get(name)()


def runtime_names() -> list[str]:
    return RUNTIMES.names()


def check_runtimes(names: tuple[str, ...] | list[str], where: str) -> tuple[str, ...]:
    """A suite's runtime list: known names, no repeats; one ConfigError naming the bad entry and the choices."""
    known = runtime_names()
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ConfigError(f"{where}: unknown runtime {name!r}; choose from {', '.join(known)}")
        if name in out:
            raise ConfigError(f"{where}: runtime {name!r} is listed twice")
        out.append(name)
    return tuple(out)
