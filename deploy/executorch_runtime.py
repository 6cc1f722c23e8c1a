"""ExecuTorch with the XNNPACK delegate as a deployment target: the path a torch model takes to a phone.

`torch.export` → edge dialect → XNNPACK partition → `.pte` program, run through ExecuTorch's Python runtime. The
program is exported with a dynamic batch axis up to `max_batch`; larger batches run in chunks of that size.
Lowering takes seconds per model, so programs are kept by the model's weights and architecture and the ExecuTorch
version: in memory per process, and on disk (`$XDG_CACHE_HOME/slimbench/executorch`), so the process that
evaluates a model and the one that times it lower it once between them, and a reference once per machine. An ONNX
graph has no torch program to export, so a method that produced one (int8 QDQ) cannot deploy here; the record
says so.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimbench.core.errors import NotApplicableError
from slimbench.deploy.onnx_export import OnnxModel
from slimbench.deploy.runtime_registry import Runtime, register_runtime

MIN_MAX_BATCH = 64          # the batch axis every program accepts, at least (the harness's batch-N latency)
_PROGRAMS: collections.OrderedDict[str, bytes] = collections.OrderedDict()
_PROGRAMS_KEPT = 4


def _program_key(model: nn.Module, example: torch.Tensor, max_batch: int) -> str:
    h = hashlib.sha256(repr(model).encode())
    h.update(f"{tuple(example.shape[1:])}{example.dtype}{max_batch}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}{t.dtype}{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def program_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimbench" / "executorch"


def lower_to_xnnpack(model: nn.Module, example: torch.Tensor, max_batch: int) -> bytes:
    """The `.pte` program of `model` with every operator XNNPACK supports delegated to it."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.version import __version__ as et_version

    key = _program_key(model, example, max_batch) + "-" + et_version
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    path = program_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pte"
    if path.is_file():
        data = path.read_bytes()
        _remember(key, data)
        return data

    x = example[:1].repeat(max_batch, *([1] * (example.dim() - 1)))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.export.export(model.eval(), (x,),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=max_batch)},))
        data = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)   # atomic: a concurrent reader sees the whole program or none
    _remember(key, data)
    return data


def _remember(key: str, data: bytes) -> None:
    _PROGRAMS[key] = data
    while len(_PROGRAMS) > _PROGRAMS_KEPT:
        _PROGRAMS.popitem(last=False)


class ExecutorchModel(nn.Module):
    """An ExecuTorch program behind the `nn.Module` call interface; pickles as its `.pte` bytes."""

    float_model: nn.Module | None   # set through __dict__: what parameters and MACs are counted on

    def __init__(self, pte: bytes, max_batch: int, threads: int | None, float_model: nn.Module | None = None):
        super().__init__()
        self.pte, self.max_batch, self.threads = pte, max_batch, threads
        self.__dict__["float_model"] = float_model
        self._method: Any = None

    @property
    def method(self) -> Any:
        if self._method is None:
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime as EtRuntime

            if self.threads:   # XNNPACK's thread pool is per process: fixed threads like every other runtime
                portable_lib._unsafe_reset_threadpool(self.threads)
            self._method = EtRuntime.get().load_program(self.pte).load_method("forward")
        return self._method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().contiguous()
        outs = [self.method.execute([chunk.contiguous()])[0].clone() for chunk in x.split(self.max_batch)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_method"] = None
        return state

    def extra_repr(self) -> str:
        return f"bytes={len(self.pte)}, max_batch={self.max_batch}, threads={self.threads}"


@register_runtime("executorch")
class Executorch(Runtime):
    """ExecuTorch, XNNPACK delegate (float32), from the torch model through torch.export."""

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        if isinstance(model, ExecutorchModel):
            return ExecutorchModel(model.pte, model.max_batch, threads, model.float_model)
        if isinstance(model, OnnxModel):
            raise NotApplicableError(f"this {model.precision} ONNX graph has no torch program for ExecuTorch to "
                                     f"export (ExecuTorch's int8 is its own PT2E flow)")
        try:
            import executorch  # noqa: F401
        except ImportError as exc:
            raise NotApplicableError(f"ExecuTorch is not installed ({exc}); pip install executorch") from None
        max_batch = max(MIN_MAX_BATCH, len(example))
        try:
            pte = lower_to_xnnpack(model, example, max_batch)
        except Exception as exc:   # export and lowering raise many types; the reason is what the record needs
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise NotApplicableError(f"ExecuTorch cannot export {type(model).__name__}: "
                                     f"{exc.__class__.__name__}: {first}") from None
        return ExecutorchModel(pte, max_batch, threads, model)

    def file_bytes(self, deployed: nn.Module) -> int | None:
        return len(deployed.pte) if isinstance(deployed, ExecutorchModel) else None

    def describe(self, deployed: nn.Module) -> dict[str, Any]:
        return {"delegate": "XNNPACK", "precision": "float32"} if isinstance(deployed, ExecutorchModel) else {}
