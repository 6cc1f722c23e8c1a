"""ExecuTorch with the XNNPACK delegate as a deployment target: the path a torch model takes to a phone.

`torch.export` → edge dialect → XNNPACK partition → `.pte` program, run through ExecuTorch's Python runtime. The
program is exported with a dynamic batch axis up to `max_batch`; larger batches run in chunks of that size.
Lowering takes seconds per model, so programs are kept by the model's weights and architecture and the ExecuTorch
version: in memory per process, and on disk (`$XDG_CACHE_HOME/slimbench/executorch`), so the process that
evaluates a model and the one that times it lower it once between them, and a reference once per machine. An ONNX
graph has no torch program to export, so a method that produced one (int8 QDQ) cannot deploy here; the record
says so. A method may also produce a program itself (ExecuTorch's own int8 flow): the `.pte` bytes are then its stored
form and artifact, and only ExecuTorch runs it. What a program holds (each constant's element type and bytes, the
precision of each compute kernel, delegated or not) is read back from the `.pte` itself: `program_contents`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimbench.core.errors import NotApplicableError, StoredFormError
from slimbench.deploy.onnx_export import OnnxModel
from slimbench.deploy.packing import Packed
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

    data = lower_program(model.eval(), example, max_batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)   # atomic: a concurrent reader sees the whole program or none
    _remember(key, data)
    return data


def export_program(model: nn.Module, example: torch.Tensor, max_batch: int) -> torch.export.ExportedProgram:
    """`torch.export` of `model` with a batch axis from 1 to `max_batch`."""
    x = example[:1].repeat(max_batch, *([1] * (example.dim() - 1)))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=max_batch)},))


def lower_program(model: nn.Module, example: torch.Tensor, max_batch: int) -> bytes:
    """Export `model` (a torch module, or a PT2E-quantized graph module) and lower it to an XNNPACK `.pte`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = export_program(model, example, max_batch)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)


def _remember(key: str, data: bytes) -> None:
    _PROGRAMS[key] = data
    while len(_PROGRAMS) > _PROGRAMS_KEPT:
        _PROGRAMS.popitem(last=False)


class ExecutorchModel(nn.Module):
    """An ExecuTorch program behind the `nn.Module` call interface; pickles as its `.pte` bytes.

    `precision` is what the program computes in ("float32" for a lowered torch model, "int8" for a program a
    quantizer produced); `float_model` the torch model it was made from, where parameters and MACs are counted.
    """

    float_model: nn.Module | None   # set through __dict__: what parameters and MACs are counted on

    def __init__(self, pte: bytes, max_batch: int, threads: int | None, float_model: nn.Module | None = None,
                 precision: str = "float32"):
        super().__init__()
        self.pte, self.max_batch, self.threads, self.precision = pte, max_batch, threads, precision
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

    def with_threads(self, threads: int | None) -> ExecutorchModel:
        return ExecutorchModel(self.pte, self.max_batch, threads, self.float_model, self.precision)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_method"] = None
        return state

    def extra_repr(self) -> str:
        return f"precision={self.precision}, bytes={len(self.pte)}, max_batch={self.max_batch}, threads={self.threads}"


def only_in_executorch(model: nn.Module, runtime: str) -> None:
    """The refusal of every other runtime: a `.pte` program has no graph or torch module they could run."""
    if isinstance(model, ExecutorchModel):
        raise NotApplicableError(f"this {model.precision} ExecuTorch program (.pte, XNNPACK) runs only in ExecuTorch; "
                                 f"it has no {runtime} form")


# -- what a program holds ----------------------------------------------------------------------------------
XNN_DTYPES = {"xnn_datatype_fp32": "float32", "xnn_datatype_fp16": "float16", "xnn_datatype_bf16": "bfloat16",
              "xnn_datatype_qint8": "int8", "xnn_datatype_qcint8": "int8", "xnn_datatype_quint8": "uint8",
              "xnn_datatype_qint32": "int32", "xnn_datatype_qcint32": "int32", "xnn_datatype_qcint4": "int4",
              "xnn_datatype_qbint4": "int4", "xnn_datatype_qdint8": "int8"}
_NUMPY = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "int32": np.int32}
# XNNPACK nodes that multiply by a weight, and the field naming it
XNN_COMPUTE = {"XNNConv2d": "filter_id", "XNNDepthwiseConv2d": "filter_id", "XNNConvTranspose2d": "filter_id",
               "XNNFullyConnected": "filter_id", "XNNBatchMatrixMultiply": "input2_id"}
# the program's own (not delegated) operators that compute in float32 on the portable kernels
PORTABLE_COMPUTE = ("aten::convolution", "aten::linear", "aten::addmm", "aten::mm", "aten::bmm")


@dataclass(frozen=True)
class ProgramConstant:
    """A constant tensor a program stores: its element type, shape, the bytes its values take, those of its
    per-channel scales, and its values as stored (None where the element type has no numpy form, e.g. packed int4)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    scale_bytes: int
    values: np.ndarray | None = field(compare=False, repr=False)


@dataclass(frozen=True)
class ProgramContents:
    constants: tuple[ProgramConstant, ...]
    kernels: dict[str, int]            # compute kernels by the element type of their weight
    delegated_nodes: dict[str, int]    # XNNPACK nodes by type
    operators: tuple[str, ...]         # the operators the program runs itself (outside the delegate)


def _xnn_graph(flatbuffer: bytes) -> dict[str, Any]:
    """An XNNPACK delegate's graph as JSON, through the `flatc` ExecuTorch ships and the delegate's schema."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import _get_schema_bytes
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    with tempfile.TemporaryDirectory() as tmp:
        schema, blob = Path(tmp) / "schema.fbs", Path(tmp) / "graph.bin"
        schema.write_bytes(_get_schema_bytes())
        blob.write_bytes(flatbuffer)
        subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary", "--defaults-json", "-o", tmp,
                        str(schema), "--", str(blob)], check=True, capture_output=True)
        text = (Path(tmp) / "graph.json").read_text()
    return json.loads(re.sub(r"(?<![\w\"])-?(nan|inf)\b", "null", text))   # flatc writes non-JSON floats bare


def _constant_data(entries: list[dict[str, Any]], inline: bytes, named: dict[str, bytes], idx: int) -> bytes:
    """The bytes of a delegate's constant `idx`: in the program's named data, or inline after its graph."""
    entry = entries[idx]
    if entry.get("named_key"):
        return named[entry["named_key"]]
    return inline[entry["offset"]:entry["offset"] + entry["size"]]


@functools.lru_cache(maxsize=8)
def program_contents(pte: bytes) -> ProgramContents:
    """What a `.pte` holds, read back from its bytes: every constant of its XNNPACK delegates (weights, biases,
    with their stored element type and per-channel scales) and of the program itself, and the compute kernels by
    the element type of their weight. A program that does not parse is a StoredFormError."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        pte_file = deserialize_pte_binary(pte)
    except Exception as exc:   # flatbuffer and header errors come in many types
        raise StoredFormError(f"it is not an ExecuTorch program ({exc.__class__.__name__}: {exc})") from None
    program = pte_file.program
    named: dict[str, bytes] = {}
    if pte_file.named_data is not None:
        store = pte_file.named_data
        named = {k: bytes(store.buffers[v.buffer_index]) for k, v in store.pte_data.items()}
    constants: list[ProgramConstant] = []
    kernels: collections.Counter[str] = collections.Counter()
    delegated: collections.Counter[str] = collections.Counter()
    operators: list[str] = []
    for plan in program.execution_plan:
        for d, delegate in enumerate(plan.delegates):
            if "xnnpack" not in delegate.id.lower():
                raise StoredFormError(f"it delegates to {delegate.id}, which slimbench cannot read")
            blob = bytes(program.backend_delegate_data[delegate.processed.index].data)
            header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
            graph = _xnn_graph(blob[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size])
            inline = blob[header.constant_data_offset:header.constant_data_offset + header.constant_data_size]
            data = functools.partial(_constant_data, graph["constant_data"], inline, named)
            values = {}
            for v in graph["xvalues"]:
                union = v["xvalue_union"]
                tensor = union.get("tensor_value", union)
                values[tensor["id_out"]] = tensor
                if not tensor.get("constant_buffer_idx"):
                    continue
                dtype = XNN_DTYPES.get(tensor["datatype"], tensor["datatype"])
                raw = data(tensor["constant_buffer_idx"])
                quant = union.get("quant_params") or {}
                scales = len(data(quant["scale_buffer_idx"])) if quant.get("scale_buffer_idx") else 0
                shape = tuple(int(n) for n in tensor["dims"])
                decoded = np.frombuffer(raw, dtype=_NUMPY[dtype]).copy() if dtype in _NUMPY else None
                constants.append(ProgramConstant(f"delegate{d}/{tensor['id_out']}", dtype, shape, len(raw), scales,
                                                 decoded))
            for node in graph["xnodes"]:
                kind = node["xnode_union_type"]
                delegated[kind] += 1
                if kind in XNN_COMPUTE:
                    weight = values[node["xnode_union"][XNN_COMPUTE[kind]]]
                    kernels[XNN_DTYPES.get(weight["datatype"], weight["datatype"])] += 1
        for op in plan.operators:
            operators.append(op.name)
        for chain in plan.chains:
            for instruction in chain.instructions:
                args = instruction.instr_args
                if hasattr(args, "op_index") and plan.operators[args.op_index].name in PORTABLE_COMPUTE:
                    kernels["float32"] += 1
        for i, value in enumerate(plan.values):   # constants the program keeps itself, outside the delegates
            tensor = value.val
            if getattr(tensor, "data_buffer_idx", 0) and getattr(tensor, "allocation_info", None) is None:
                dtype = str(tensor.scalar_type.name).lower()
                dtype = {"float": "float32", "half": "float16", "char": "int8", "byte": "uint8", "int": "int32",
                         "long": "int64"}.get(dtype, dtype)
                shape = tuple(int(n) for n in tensor.sizes)
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NUMPY.get(dtype, np.int64)).itemsize
                constants.append(ProgramConstant(f"program/{i}", dtype, shape, nbytes, 0, None))
    return ProgramContents(tuple(constants), dict(kernels), dict(delegated), tuple(operators))


# -- stored form -------------------------------------------------------------------------------------------
EXECUTORCH_PAYLOAD_KEY = "executorch_program"


@dataclass
class ProgramPacked(Packed):
    """The stored form of an ExecuTorch program: the `.pte` file itself, as it ships (weights, graph and delegate
    payloads in one file, so all of it counts). Its contents are read from those bytes (`program_contents`)."""

    program: bytes = b""
    max_batch: int = MIN_MAX_BATCH
    precision: str = "float32"

    @property
    def nbytes(self) -> int:
        return len(self.program)

    def formats(self) -> dict[str, int]:
        return {"executorch_program": 1}

    def to_payload(self) -> dict[str, Any]:
        return {**super().to_payload(), EXECUTORCH_PAYLOAD_KEY: self.program, "max_batch": self.max_batch,
                "precision": self.precision}


def program_packed(model: ExecutorchModel) -> ProgramPacked:
    return ProgramPacked(program=model.pte, max_batch=model.max_batch, precision=model.precision)


def program_from_payload(payload: dict[str, Any]) -> ExecutorchModel:
    """A saved artifact (loaded with `weights_only=True`) back as the program it stores."""
    return ExecutorchModel(bytes(payload[EXECUTORCH_PAYLOAD_KEY]), int(payload["max_batch"]), None,
                           precision=str(payload.get("precision", "float32")))


def check_program(packed: Packed, model: ExecutorchModel) -> None:
    """A program's stored form must be exactly the program that runs, and parse as one."""
    if not isinstance(packed, ProgramPacked):
        raise StoredFormError("the model is an ExecuTorch program, but its stored form is not the program "
                              "(use deploy.executorch_runtime.program_packed)")
    if packed.program != model.pte:
        raise StoredFormError(f"its program ({len(packed.program)} bytes) is not the model's .pte "
                              f"({len(model.pte)} bytes)")
    if packed.tensors or packed.meta:
        raise StoredFormError("a program's stored form holds the .pte only, but it carries tensors besides")
    program_contents(packed.program)


@register_runtime("executorch")
class Executorch(Runtime):
    """ExecuTorch, XNNPACK delegate: a torch model lowered in float32 through torch.export, or a program a method
    produced (its own int8 flow) as it is."""

    def deploy(self, model: nn.Module, example: torch.Tensor, threads: int | None) -> nn.Module:
        if isinstance(model, ExecutorchModel):
            return model.with_threads(threads)
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
        if not isinstance(deployed, ExecutorchModel):
            return {}
        return {"delegate": "XNNPACK", "precision": deployed.precision,
                "kernels": program_contents(deployed.pte).kernels}
