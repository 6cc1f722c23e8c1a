"""Runtimes a model is measured in: PyTorch eager, ONNX Runtime and torch.compile, each beside the baseline.

Every model is timed in every runtime it can run in, with the reference (trained fp32 baseline) deployed the
same way and timed in the same interleaved rounds, so each ratio compares like with like. The runtime a method
deploys its model in (`Outcome.runtime`) gives the headline latency and is where accuracy is measured.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from slimbench.core.errors import NotApplicableError, UnknownNameError
from slimbench.deploy.latency import MeasureConfig, latency_ms
from slimbench.deploy.onnx_export import OnnxModel, export_onnx, onnx_packed
from slimbench.deploy.packing import Packed, pack_state_dict

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
        timings = latency_ms(callables, x, cfg)
        for name, ms in timings.items():
            runtime, role = name.split("/")
            out[role].setdefault(runtime, {})[f"{key}_ms"] = ms
    if reference is None:
        out["reference"] = copy.deepcopy(out["model"])
    return out
