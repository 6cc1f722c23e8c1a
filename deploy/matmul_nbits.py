"""Weight-only 4- and 8-bit Linear layers as ONNX Runtime's `MatMulNBits` (com.microsoft), whose CPU kernel reads the
packed weights directly.

A method quantizes in torch (its own integer codes, block scales and zero points, e.g. GPTQ's) and exports the model
with the dequantized weights; `to_matmul_nbits` then replaces each MatMul / Gemm whose weight is one of those layers
by a MatMulNBits node holding the packed codes. ONNX Runtime's `MatMulNBitsQuantizer` writes the same op but
quantizes the float weights itself (round-to-nearest) and takes no codes from outside, hence this small writer.

Layout (MatMulNBits, bits b, block size B along K): `B` uint8 `[N, ceil(K/B), B·b/8]`, each block one column's K
values, two 4-bit codes per byte low nibble first; `scales` float32 `[N · blocks]`; `zero_points` uint8
`[N · ceil(blocks · b / 8)]`, each row's packed the same way. A weight is (code - zero point) · scale.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from slimbench.deploy.onnx_export import optimized_graph

DOMAIN = "com.microsoft"
OP = "MatMulNBits"


@dataclass
class BlockQuantized:
    """One Linear weight `[N, K]` (out, in) as unsigned `bits`-bit codes with a scale and zero point per block of
    `block_size` consecutive inputs of a row."""

    codes: torch.Tensor        # [N, K] uint8, 0 .. 2^bits - 1
    scales: torch.Tensor       # [N, blocks] float32
    zero_points: torch.Tensor  # [N, blocks] uint8
    bits: int
    block_size: int

    def dequantize(self) -> torch.Tensor:
        rep = lambda t: t.repeat_interleave(self.block_size, dim=1)[:, : self.codes.shape[1]]  # noqa: E731
        return (self.codes.float() - rep(self.zero_points).float()) * rep(self.scales)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Rows of codes packed `8 // bits` to a byte, lowest element in the lowest bits."""
    per = 8 // bits
    values = values.astype(np.uint8)
    pad = (-values.shape[-1]) % per
    if pad:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], pad), np.uint8)], axis=-1)
    grouped = values.reshape(*values.shape[:-1], -1, per)
    out = np.zeros(grouped.shape[:-1], np.uint8)
    for i in range(per):
        out |= (grouped[..., i] << (bits * i)).astype(np.uint8)
    return out


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    per = 8 // bits
    parts = [(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    return np.stack(parts, axis=-1).reshape(*packed.shape[:-1], -1)[..., :count]


def pack(q: BlockQuantized) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, scales, zero_points) initializers of MatMulNBits for `q`; the padding past K holds the zero point."""
    n, k = q.codes.shape
    blocks = math.ceil(k / q.block_size)
    codes = np.repeat(q.zero_points.numpy(), q.block_size, axis=1)[:, : blocks * q.block_size].copy()
    codes[:, :k] = q.codes.numpy()
    b = _pack(codes.reshape(n, blocks, q.block_size), q.bits)
    return b, q.scales.numpy().astype(np.float32).reshape(-1), _pack(q.zero_points.numpy(), q.bits).reshape(-1)


def unpack(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, k: int, n: int, bits: int,
           block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The integer codes `[N, K]` and the dequantized weights `[K, N]` a MatMulNBits node holds."""
    blocks = math.ceil(k / block_size)
    codes = _unpack(b.reshape(n, blocks, -1), bits, block_size).reshape(n, -1)[:, :k]
    zp = (_unpack(zero_points.reshape(n, -1), bits, blocks) if zero_points is not None
          else np.full((n, blocks), 1 << (bits - 1), np.uint8))
    rep = lambda t: np.repeat(t, block_size, axis=1)[:, :k]  # noqa: E731
    weights = (codes.astype(np.float32) - rep(zp).astype(np.float32)) * rep(scales.reshape(n, blocks))
    return codes, weights.T


def _key(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def to_matmul_nbits(fp32: bytes, layers: dict[str, BlockQuantized], accuracy_level: int = 0) -> bytes:
    """The exported fp32 graph (weights = the layers' dequantized weights) with those layers as MatMulNBits.

    The graph is first constant-folded by ONNX Runtime's basic level, so every Linear weight is one `[K, N]`
    initializer of a MatMul (or `[N, K]` of a transB Gemm); layers are found by their exact dequantized values.
    Raises ValueError naming the layers whose weight is in no MatMul or Gemm.
    """
    model = optimized_graph(fp32, level="basic")
    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    by_value = {_key(q.dequantize().numpy().T): name for name, q in layers.items()}
    found: set[str] = set()
    nodes, new_inits, replaced = [], [], set()
    for node in graph.node:
        weight = arrays.get(node.input[1]) if len(node.input) > 1 else None
        gemm = node.op_type == "Gemm" and _attr(node, "transB", 0) == 1 and _attr(node, "transA", 0) == 0 \
            and _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0
        name = None
        if weight is not None and weight.ndim == 2 and weight.dtype == np.float32 and (node.op_type == "MatMul"
                                                                                        or gemm):
            name = by_value.get(_key(weight.T if gemm else weight))
        if name is None:
            nodes.append(node)
            continue
        q = layers[name]
        found.add(name)
        replaced.add(node.input[1])
        b, scales, zp = pack(q)
        prefix = f"{name}.nbits"
        new_inits += [numpy_helper.from_array(b, f"{prefix}.B"), numpy_helper.from_array(scales, f"{prefix}.scales"),
                      numpy_helper.from_array(zp, f"{prefix}.zero_points")]
        inputs = [node.input[0], f"{prefix}.B", f"{prefix}.scales", f"{prefix}.zero_points"]
        if gemm and len(node.input) > 2 and node.input[2]:
            inputs += ["", node.input[2]]   # g_idx unused; bias
        n, k = q.codes.shape
        op = helper.make_node(OP, inputs, list(node.output), name=prefix, domain=DOMAIN, K=k, N=n, bits=q.bits,
                              block_size=q.block_size)
        if accuracy_level:
            op.attribute.append(helper.make_attribute("accuracy_level", accuracy_level))
        nodes.append(op)
    missing = sorted(set(layers) - found)
    if missing:
        raise ValueError(f"no MatMul or Gemm of the exported graph holds the weights of {missing}")
    still_used = {i for node in nodes for i in node.input}
    kept = [init for init in graph.initializer if init.name not in replaced or init.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(op.domain == DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model.SerializeToString()


@dataclass(frozen=True)
class NbitsWeight:
    """Where a MatMulNBits node keeps one weight: its initializers and shape."""

    b: str
    scales: str
    zero_points: str | None
    k: int
    n: int
    bits: int
    block_size: int

    def decode(self, tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        zp = tensors[self.zero_points] if self.zero_points else None
        return unpack(tensors[self.b], tensors[self.scales], zp, self.k, self.n, self.bits, self.block_size)


def nbits_weights(graph: onnx.GraphProto) -> dict[str, NbitsWeight]:
    """Every MatMulNBits weight of a graph, by the name of its packed `B` initializer."""
    out = {}
    for node in graph.node:
        if node.op_type == OP and node.domain == DOMAIN:
            zp = node.input[3] if len(node.input) > 3 and node.input[3] else None
            out[node.input[1]] = NbitsWeight(node.input[1], node.input[2], zp, _attr(node, "K", 0), _attr(node, "N", 0),
                                             _attr(node, "bits", 4), _attr(node, "block_size", 0))
    return out
