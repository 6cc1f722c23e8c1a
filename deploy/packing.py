"""The stored form of a model: each tensor in the smallest honest encoding we can decode again.

Stored size must come from a real compressed representation, not from a formula: a pruned tensor is
stored as a bit mask plus its non-zero values, a clustered tensor as a codebook plus bit-packed indices,
an int8 tensor as int8 with its scales. Decoding gives back exactly the tensor that was measured, so any
figure can be re-measured from the saved artifact. No library stores arbitrary state dicts this way
(safetensors / torch.save keep dense tensors), hence this small codec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

MIN_NUMEL = 64          # tiny tensors (biases, BN stats) stay dense: the bookkeeping would outweigh them
MAX_CODEBOOK = 256


@dataclass
class Packed:
    """Flat `name/part → tensor` storage plus JSON-able decoding metadata per original tensor."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def formats(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.meta.values():
            counts[m["format"]] = counts.get(m["format"], 0) + 1
        return counts

    def to_payload(self) -> dict[str, Any]:
        """What goes to disk; loads with `torch.load(weights_only=True)`."""
        return {"format": "slimbench-packed-v1", "meta": self.meta, "tensors": self.tensors}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Packed":
        if not isinstance(payload, dict) or payload.get("format") != "slimbench-packed-v1":
            raise ValueError("not a slimbench packed state (missing format tag 'slimbench-packed-v1')")
        return cls(dict(payload["tensors"]), dict(payload["meta"]))


def _nbytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Keep the low `bits` bits of each uint8 value, concatenated into bytes."""
    unpacked = np.unpackbits(values.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(unpacked.reshape(-1))


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    flat = np.unpackbits(packed)[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, 8 - bits:] = flat
    return np.packbits(padded, axis=1).reshape(-1)


def _codebook_parts(values: torch.Tensor) -> dict[str, torch.Tensor] | None:
    codebook, inverse = torch.unique(values, return_inverse=True)
    if len(codebook) > MAX_CODEBOOK:
        return None
    bits = max(1, math.ceil(math.log2(len(codebook))))
    idx = torch.from_numpy(pack_bits(inverse.numpy().astype(np.uint8), bits))
    return {"codebook": codebook, "indices": idx, "bits": torch.tensor([bits], dtype=torch.uint8)}


def pack_tensor(t: torch.Tensor) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Choose the smallest exact encoding of `t`; returns (meta, parts)."""
    t = t.detach().cpu()
    meta: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    if t.is_quantized:
        return _pack_quantized(t, meta)
    flat = t.contiguous().reshape(-1)
    options: list[tuple[str, dict[str, torch.Tensor]]] = [("dense", {"data": flat.clone()})]
    if t.is_floating_point() and flat.numel() >= MIN_NUMEL:
        nonzero = flat != 0
        nnz_values = flat[nonzero]
        if nnz_values.numel() < flat.numel():
            mask = torch.from_numpy(np.packbits(nonzero.numpy()))
            options.append(("sparse", {"mask": mask, "values": nnz_values.clone()}))
            cb = _codebook_parts(nnz_values.float()) if nnz_values.numel() else None
            if cb is not None:
                cb["codebook"] = cb["codebook"].to(t.dtype)
                options.append(("sparse_codebook", {"mask": mask, **cb}))
        cb = _codebook_parts(flat.float())
        if cb is not None:
            cb["codebook"] = cb["codebook"].to(t.dtype)
            options.append(("codebook", cb))
    fmt, parts = min(options, key=lambda o: _nbytes(o[1]))
    return {**meta, "format": fmt}, parts


def _pack_quantized(t: torch.Tensor, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    parts = {"int_repr": t.int_repr().clone()}
    if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        parts["scales"] = t.q_per_channel_scales().float()
        parts["zero_points"] = t.q_per_channel_zero_points().to(torch.int32)
        return {**meta, "format": "quantized_per_channel", "axis": int(t.q_per_channel_axis())}, parts
    parts["scales"] = torch.tensor([t.q_scale()], dtype=torch.float32)
    parts["zero_points"] = torch.tensor([t.q_zero_point()], dtype=torch.int32)
    return {**meta, "format": "quantized_per_tensor"}, parts


def unpack_tensor(meta: dict[str, Any], parts: dict[str, torch.Tensor]) -> torch.Tensor:
    shape, dtype = meta["shape"], getattr(torch, meta["dtype"])
    fmt = meta["format"]
    numel = math.prod(shape)
    if fmt == "dense":
        return parts["data"].reshape(shape)
    if fmt == "quantized_per_channel":
        return torch._make_per_channel_quantized_tensor(
            parts["int_repr"], parts["scales"].double(), parts["zero_points"].long(), meta["axis"]
        )
    if fmt == "quantized_per_tensor":
        return torch._make_per_tensor_quantized_tensor(
            parts["int_repr"], float(parts["scales"][0]), int(parts["zero_points"][0])
        )
    if fmt in ("codebook", "sparse_codebook"):
        count = numel if fmt == "codebook" else None
        mask = None
        if fmt == "sparse_codebook":
            mask = torch.from_numpy(np.unpackbits(parts["mask"].numpy())[:numel].astype(bool))
            count = int(mask.sum())
        idx = unpack_bits(parts["indices"].numpy(), int(parts["bits"][0]), count)
        values = parts["codebook"][torch.from_numpy(idx.astype(np.int64))]
        if mask is None:
            return values.reshape(shape).to(dtype)
        out = torch.zeros(numel, dtype=dtype)
        out[mask] = values.to(dtype)
        return out.reshape(shape)
    if fmt == "sparse":
        mask = torch.from_numpy(np.unpackbits(parts["mask"].numpy())[:numel].astype(bool))
        out = torch.zeros(numel, dtype=dtype)
        out[mask] = parts["values"]
        return out.reshape(shape)
    raise ValueError(f"unknown packed format {fmt!r}")


def pack_state_dict(state: dict[str, torch.Tensor]) -> Packed:
    packed = Packed()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        meta, parts = pack_tensor(tensor)
        packed.meta[name] = meta
        for part, value in parts.items():
            packed.tensors[f"{name}/{part}"] = value
    return packed


def unpack_state_dict(packed: Packed) -> dict[str, torch.Tensor]:
    out = {}
    for name, meta in packed.meta.items():
        prefix = f"{name}/"
        parts = {k[len(prefix):]: v for k, v in packed.tensors.items() if k.startswith(prefix)}
        out[name] = unpack_tensor(meta, parts)
    return out
