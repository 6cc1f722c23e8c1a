"""Runtimes a model is measured in: PyTorch eager, ONNX Runtime and torch.compile, each beside the baseline.

Every model is timed in every runtime it can run in, with the reference (trained fp32 baseline) deployed the
same way and timed in the same interleaved rounds, so each ratio compares like with like. The runtime a method
deploys its model in (`Outcome.runtime`) gives the headline latency and is where accuracy is measured.
"""

from __future__ import annotations

import copy
import io
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimbench.core.errors import NotApplicableError, UnknownNameError
from slimbench.deploy.latency import MeasureConfig, latency_rounds_ms
from slimbench.deploy.onnx_export import (ONNX_PAYLOAD_KEY, OnnxModel, export_onnx, onnx_from_payload, onnx_packed,
                                          optimized_graph)
from slimbench.deploy.packing import Packed, pack_state_dict, unpack_state_dict
from slimbench.deploy.structure import load_into

RUNTIMES = ("eager", "onnxruntime", "compile")
ALWAYS_MEASURED = ("eager", "onnxruntime")   # torch.compile only where a method deploys there (compiling is slow)


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise UnknownNameError("runtime", name, RUNTIMES)
    return name


def deploy(model: nn.Module, runtime: str, example: torch.Tensor, threads: int | None) -> nn.Module:
    """`model` as it runs in `runtime` (checked on `example`); NotApplicableError says why it cannot run there."""
    check_runtime(runtime)
    if isinstance(model, OnnxModel):
        if runtime != "onnxruntime":
            raise NotApplicableError(f"this {model.precision} ONNX Runtime graph has no {runtime} form")
        deployed: nn.Module = model.with_threads(threads)
    elif runtime == "eager":
        return model
    elif runtime == "onnxruntime":
        deployed = OnnxModel(export_onnx(model, example), float_model=model, threads=threads)
    else:
        deployed = torch.compile(model)
    try:
        with torch.inference_mode():
            deployed(example[:1])   # builds the session / compiles now, so failures surface here with a reason
    except Exception as exc:
        raise NotApplicableError(
            f"{runtime} cannot run {type(model).__name__}: {exc.__class__.__name__}: {str(exc).strip()[:300]}"
        ) from None
    return deployed


def torch_form(model: nn.Module) -> nn.Module:
    """The torch module that parameters and MACs are counted on (an ONNX graph counts its source architecture)."""
    if isinstance(model, OnnxModel):
        if model.float_model is None:
            raise NotApplicableError("an ONNX Runtime model without its source torch model cannot be counted")
        return model.float_model
    return model


def stored_form(model: nn.Module) -> Packed:
    """The real stored representation: ONNX initializers for an ONNX graph, the packed state dict otherwise."""
    if isinstance(model, OnnxModel):
        return onnx_packed(model.onnx_bytes)
    return pack_state_dict(model.state_dict())


def latency_by_runtime(model: nn.Module, reference: nn.Module | None, deployed: str,
                       examples: dict[str, torch.Tensor], cfg: MeasureConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """`{"model"|"reference": {runtime: {"<example>_ms": ...} | {"unavailable": reason}}}`.

    All runnable (runtime, role) pairs are timed in the same interleaved rounds. The deployed runtime must run
    both the model and the reference: otherwise the headline ratio would compare different runtimes.
    `reference=None` says the model is the reference (the baseline cell): it is timed once and both roles
    hold those timings, rather than timing two copies of the same weights.
    """
    runtimes = list(ALWAYS_MEASURED) + ([deployed] if deployed not in ALWAYS_MEASURED else [])
    roles = (("model", model),) if reference is None else (("model", model), ("reference", reference))
    probe = next(iter(examples.values()))
    callables: dict[str, nn.Module] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {"model": {}, "reference": {}}
    for runtime in runtimes:
        for role, m in roles:
            try:
                callables[f"{runtime}/{role}"] = deploy(m, runtime, probe, cfg.threads)
            except NotApplicableError as exc:
                if runtime == deployed:
                    raise NotApplicableError(f"deployed runtime {runtime!r} cannot run the {role}: {exc}") from None
                out[role][runtime] = {"unavailable": str(exc)}
    for key, x in examples.items():
        for name, rounds in latency_rounds_ms(callables, x, cfg).items():
            runtime, role = name.split("/")
            out[role].setdefault(runtime, {}).update({f"{key}_ms": statistics.median(rounds), f"{key}_rounds_ms": rounds})
    if reference is None:
        out["reference"] = copy.deepcopy(out["model"])
    return out


def speedup_bands(latency: dict[str, dict[str, dict[str, Any]]], deployed: str) -> dict[str, dict[str, Any]]:
    """Reference ÷ model latency per runtime and timed example (batch): the median ratio and its band over
    interleaved rounds.

    Each round times the model and the reference back to back, so a per-round ratio cancels slow drift of a
    shared machine; the band (lowest to highest round ratio) is the noise a speedup has to clear.
    """
    out: dict[str, dict[str, Any]] = {}
    for runtime, timings in latency["model"].items():
        ref = latency["reference"].get(runtime, {})
        for key in (k.removesuffix("_rounds_ms") for k in timings if k.endswith("_rounds_ms")):   # every example timed
            m, r = timings.get(f"{key}_rounds_ms"), ref.get(f"{key}_rounds_ms")
            if not m or not r:
                continue
            ratios = sorted(rr / mm for mm, rr in zip(m, r))
            out.setdefault(runtime, {})[key] = {
                "ratio": ref[f"{key}_ms"] / timings[f"{key}_ms"], "low": ratios[0], "high": ratios[-1],
                "rounds": len(ratios), "deployed": runtime == deployed}
    return out


def check_packed(packed: Packed, model: nn.Module) -> None:
    """A stored form must decode to exactly the weights that were measured, or the cell fails."""
    if isinstance(model, OnnxModel):
        expected = {k: torch.from_numpy(v.copy()) for k, v in model.initializers().items()}
    else:
        expected = model.state_dict()
    decoded = unpack_state_dict(packed)
    if set(decoded) != set(expected):
        missing, extra = sorted(set(expected) - set(decoded))[:5], sorted(set(decoded) - set(expected))[:5]
        raise NotApplicableError(f"the stored form does not hold the model's tensors (missing {missing}, extra {extra})")
    for name, tensor in expected.items():
        got = decoded[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype or not torch.equal(got, tensor):
            raise NotApplicableError(f"the stored form of {name!r} does not decode to the measured weights "
                                     f"({tuple(got.shape)} {got.dtype} vs {tuple(tensor.shape)} {tensor.dtype})")


def reference_stored_like(reference: nn.Module, runtime: str, example: torch.Tensor) -> Packed:
    """The fp32 reference in the stored form of a runtime graph: exported the same way and optimised by ONNX
    Runtime's basic level (constant folding, BatchNorm folded into convolutions), as an int8 graph is."""
    if runtime != "onnxruntime":
        return pack_state_dict(reference.state_dict())
    return onnx_packed(optimized_graph(export_onnx(reference, example), level="basic").SerializeToString())


def load_artifact(data: bytes, fresh_model: Callable[[], nn.Module]) -> nn.Module:
    """A saved cell artifact back as a runnable model (never unpickles code: `weights_only=True`)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if ONNX_PAYLOAD_KEY in payload:
        return OnnxModel(onnx_from_payload(payload))
    state = unpack_state_dict(Packed.from_payload(payload))
    model = fresh_model()
    if "structure" in payload:
        return load_into(model, payload["structure"], state).eval()
    model.load_state_dict(state)
    return model.eval()
