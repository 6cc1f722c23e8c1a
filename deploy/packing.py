"""The stored form of a model: each tensor in the smallest honest encoding we can decode again.

Stored size must come from a real compressed representation, not from a formula: a pruned tensor is
stored as a bit mask plus its non-zero values, a clustered tensor as a codebook plus bit-packed or
Huffman-coded indices, an int8 tensor as int8 with its scales, and a tensor that two parameters share
(tied weights) once, with an alias for its second name. Decoding gives back exactly the tensor that was
measured, so any figure can be re-measured from the saved artifact. No library stores arbitrary state dicts
this way (safetensors / torch.save keep dense tensors), hence this small codec.

Formats (`Packed.formats()` counts them): dense; codebook (codebook + fixed-width indices) and huffman (codebook
+ canonical Huffman-coded indices; zeros, if any, are one more codeword); for tensors with zeros, where the
non-zeros are — `sparse` (a bit mask) or `relative` (Huffman-coded gaps between them, Deep Compression's
relative indices) — combined with what they are: raw values (`sparse`, `relative`), `_codebook` or `_huffman`
(e.g. `relative_huffman`: a pruned and clustered tensor as Han et al. store it); quantized_per_tensor /
quantized_per_channel; alias (a tensor stored once under another name).

The Huffman code is hand-written (heapq + numpy): no maintained Python library emits a canonical code whose
table and bit stream fit in tensors that `torch.load(weights_only=True)` reads back.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

MIN_NUMEL = 64          # tiny tensors (biases, BN stats) stay dense: the bookkeeping would outweigh them
MAX_CODEBOOK = 256
HUFFMAN_MAX_BITS = 20   # longest code; decoding uses a table of 2**HUFFMAN_MAX_BITS entries at most
PAYLOAD_TAG = "slimbench-packed-v1"


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
        return {"format": PAYLOAD_TAG, "meta": self.meta, "tensors": self.tensors}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Packed":
        if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_TAG:
            raise ValueError(f"not a slimbench packed state (missing format tag {PAYLOAD_TAG!r})")
        return cls(dict(payload["tensors"]), dict(payload["meta"]))


def _nbytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


# -- fixed-width indices -----------------------------------------------------------------------------------
def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Keep the low `bits` bits of each uint8 value, concatenated into bytes."""
    unpacked = np.unpackbits(values.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(unpacked.reshape(-1))


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    flat = np.unpackbits(packed)[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, 8 - bits:] = flat
    return np.packbits(padded, axis=1).reshape(-1)


# -- canonical Huffman ---------------------------------------------------------------------------------------
def huffman_lengths(counts: np.ndarray, max_bits: int = HUFFMAN_MAX_BITS) -> np.ndarray:
    """Code length per symbol from Huffman's merge, at most `max_bits` long; 0 for a symbol that never occurs.

    A code longer than `max_bits` (only for extremely skewed counts) is avoided by halving the counts and
    merging again: the code stays a valid prefix code, just slightly longer on average.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = np.flatnonzero(counts > 0)
    if len(present) == 1:
        lengths[present] = 1    # one symbol still takes one bit per value: no zero-length codes
    weights = counts[present]
    while len(present) > 1:
        lengths[:] = 0
        heap = [(int(c), i, [s]) for i, (s, c) in enumerate(zip(present.tolist(), weights.tolist()))]
        heapq.heapify(heap)
        while len(heap) > 1:
            c1, t1, s1 = heapq.heappop(heap)
            c2, t2, s2 = heapq.heappop(heap)
            lengths[s1 + s2] += 1
            heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
        if lengths.max() <= max_bits:
            break
        weights = np.maximum(weights >> 1, 1)
    return lengths.astype(np.uint8)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol: shorter codes first, ties by symbol, so lengths alone define it."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (int(lengths[s]), s)):
        code <<= int(lengths[s]) - prev
        codes[s], prev = code, int(lengths[s])
        code += 1
    return codes


def huffman_bytes(counts: np.ndarray, lengths: np.ndarray) -> int:
    """Size of the coded stream, without encoding it."""
    return math.ceil(int((counts.astype(np.int64) * lengths).sum()) / 8)


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate the canonical codes of `symbols` (indices into `lengths`), packed MSB first into bytes."""
    codes = canonical_codes(lengths)
    code, length = codes[symbols], lengths.astype(np.int64)[symbols]
    ends = np.cumsum(length)
    starts = ends - length
    bits = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    for j in range(int(lengths.max()) if len(symbols) else 0):
        take = length > j
        bits[starts[take] + j] = (code[take] >> (length[take] - 1 - j)) & 1
    return np.packbits(bits)


def huffman_decode(stream: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """Inverse of `huffman_encode`: `count` symbols.

    Every bit position's next `max_len` bits are looked up in a table at once (numpy); only the walk from one
    codeword to the next stays a Python loop, over plain ints.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    max_len = int(lengths.max())
    codes = canonical_codes(lengths)
    symbol_of = np.zeros(1 << max_len, dtype=np.int64)
    length_of = np.zeros(1 << max_len, dtype=np.int64)
    for s, (c, n) in enumerate(zip(codes.tolist(), lengths.tolist())):
        if n:
            lo, hi = c << (max_len - n), (c + 1) << (max_len - n)
            symbol_of[lo:hi], length_of[lo:hi] = s, n
    bits = np.unpackbits(stream).astype(np.int64)
    nbits = len(bits)
    bits = np.concatenate([bits, np.zeros(max_len, dtype=np.int64)])
    window = np.zeros(nbits, dtype=np.int64)
    for j in range(max_len):
        window = (window << 1) | bits[j: j + nbits]
    step = length_of[window].tolist()
    starts, pos = [0] * count, 0
    for i in range(count):
        starts[i] = pos
        pos += step[pos]
    return symbol_of[window[np.asarray(starts, dtype=np.int64)]]


# -- relative positions of non-zeros (Han et al. 2016, "Deep Compression", section 3) --------------------------
GAP_CAPS = (3, 7, 15, 31, 63, 127, 255)   # escape thresholds tried; the smallest coded size wins


def gap_symbols(positions: np.ndarray, cap: int) -> np.ndarray:
    """Each non-zero as the number of zeros before it; a gap ≥ cap first emits escape symbols (`cap` zeros each)."""
    gaps = np.diff(positions, prepend=-1) - 1
    escapes = gaps // cap
    symbols = np.full(len(gaps) + int(escapes.sum()), cap, dtype=np.int64)
    symbols[np.cumsum(escapes + 1) - 1] = gaps % cap
    return symbols


def gap_positions(symbols: np.ndarray, cap: int) -> np.ndarray:
    ends = np.cumsum(np.where(symbols == cap, cap, symbols + 1))
    return ends[symbols != cap] - 1


def _gap_counts(positions: np.ndarray, cap: int) -> np.ndarray:
    gaps = np.diff(positions, prepend=-1) - 1
    counts = np.bincount(gaps % cap, minlength=cap + 1)
    counts[cap] = int((gaps // cap).sum())
    return counts


# -- per-tensor encodings ----------------------------------------------------------------------------------
Parts = dict[str, torch.Tensor]
Option = tuple[str, int, Callable[[], Parts]]     # (name, bytes, build the parts): built only for the winner


def _position_options(nonzero: np.ndarray) -> list[Option]:
    """Where the non-zeros are: a bit mask (1 bit per weight), or Huffman-coded gaps (Deep Compression)."""
    mask = ("sparse", math.ceil(len(nonzero) / 8),
            lambda: {"mask": torch.from_numpy(np.packbits(nonzero))})
    positions = np.flatnonzero(nonzero)
    if len(positions) == 0:
        return [mask]
    best: tuple[int, int, np.ndarray] | None = None
    for cap in GAP_CAPS:
        counts = _gap_counts(positions, cap)
        lengths = huffman_lengths(counts)
        size = huffman_bytes(counts, lengths) + (cap + 1) + 4    # stream + code lengths + symbol count (int32)
        if best is None or size < best[0]:
            best = (size, cap, lengths)
    size, cap, lengths = best

    def build() -> Parts:
        symbols = gap_symbols(positions, cap)
        return {"gap_lengths": torch.from_numpy(lengths),
                "gap_stream": torch.from_numpy(huffman_encode(symbols, lengths)),
                "gap_count": torch.tensor([len(symbols)], dtype=torch.int32)}

    return [mask, ("relative", size, build)]


def _value_options(values: torch.Tensor) -> list[Option]:
    """The values themselves, or a codebook with fixed-width or Huffman-coded indices (≤ MAX_CODEBOOK values)."""
    options: list[Option] = [("", _nbytes({"v": values}), lambda: {"values": values.clone()})]
    if values.numel() == 0:
        return options
    codebook, inverse = torch.unique(values, return_inverse=True)
    k = len(codebook)
    if k > MAX_CODEBOOK:
        return options
    symbols = inverse.numpy().astype(np.int64)
    book = k * codebook.element_size()
    bits = max(1, math.ceil(math.log2(k)))
    options.append(("codebook", book + math.ceil(len(symbols) * bits / 8) + 1,
                    lambda: {"codebook": codebook, "bits": torch.tensor([bits], dtype=torch.uint8),
                             "indices": torch.from_numpy(pack_bits(symbols.astype(np.uint8), bits))}))
    counts = np.bincount(symbols, minlength=k)
    lengths = huffman_lengths(counts)
    options.append(("huffman", book + huffman_bytes(counts, lengths) + k,
                    lambda: {"codebook": codebook, "code_lengths": torch.from_numpy(lengths),
                             "stream": torch.from_numpy(huffman_encode(symbols, lengths))}))
    return options


def pack_tensor(t: torch.Tensor) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Choose the smallest exact encoding of `t`; returns (meta, parts).

    Dense values, or all values through a codebook, or — when there are zeros — the non-zeros' positions (mask
    or relative) combined with their values (raw, codebook, Huffman-coded codebook): every combination is sized
    without encoding, and only the smallest is built.
    """
    t = t.detach().cpu()
    meta: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    if t.is_quantized:
        return _pack_quantized(t, meta)
    flat = t.contiguous().reshape(-1)
    candidates: list[tuple[str, int, list[Callable[[], Parts]]]] = [
        ("dense", _nbytes({"data": flat}), [lambda: {"data": flat.clone()}])]
    if t.is_floating_point() and flat.numel() >= MIN_NUMEL:
        candidates += [(name, size, [build]) for name, size, build in _value_options(flat)[1:]]
        nonzero = (flat != 0).numpy()
        if not nonzero.all():
            nnz_values = flat[torch.from_numpy(nonzero)]
            for where, where_size, where_build in _position_options(nonzero):
                for what, what_size, what_build in _value_options(nnz_values):
                    candidates.append(("_".join(p for p in (where, what) if p), where_size + what_size,
                                       [where_build, what_build]))
    fmt, size, builders = min(candidates, key=lambda c: c[1])
    parts = {k: v for build in builders for k, v in build().items()}
    assert _nbytes(parts) == size, (fmt, _nbytes(parts), size)   # the size compared is the size stored
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


VALUE_FORMATS = ("", "codebook", "huffman")
POSITION_FORMATS = ("sparse", "relative")


def _values(what: str, parts: Parts, count: int) -> torch.Tensor:
    if what == "":
        return parts["values"]
    if what == "huffman":
        idx = huffman_decode(parts["stream"].numpy(), parts["code_lengths"].numpy(), count)
    else:
        idx = unpack_bits(parts["indices"].numpy(), int(parts["bits"][0]), count).astype(np.int64)
    return parts["codebook"][torch.from_numpy(idx)]


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
    if fmt in ("codebook", "huffman"):
        return _values(fmt, parts, numel).to(dtype).reshape(shape)
    where, _, what = fmt.partition("_")
    if where not in POSITION_FORMATS or what not in VALUE_FORMATS:
        raise ValueError(f"unknown packed format {fmt!r}")
    if where == "sparse":
        positions = np.flatnonzero(np.unpackbits(parts["mask"].numpy())[:numel])
    else:
        lengths = parts["gap_lengths"].numpy()
        symbols = huffman_decode(parts["gap_stream"].numpy(), lengths, int(parts["gap_count"][0]))
        positions = gap_positions(symbols, len(lengths) - 1)
    out = torch.zeros(numel, dtype=dtype)
    out[torch.from_numpy(positions)] = _values(what, parts, len(positions)).to(dtype)
    return out.reshape(shape)


# -- state dicts -------------------------------------------------------------------------------------------
def _storage_key(t: torch.Tensor) -> tuple[Any, ...] | None:
    """Identifies the exact memory a tensor views, so tied parameters (one tensor, two names) are stored once."""
    if t.is_quantized or t.numel() == 0:
        return None
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def pack_state_dict(state: dict[str, torch.Tensor]) -> Packed:
    packed = Packed()
    first_name: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        # names may contain '/' (ONNX initializers do): parts are split off at the last '/', part names have none
        key = _storage_key(tensor)
        if key is not None and key in first_name:
            packed.meta[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                                 "format": "alias", "of": first_name[key]}
            continue
        if key is not None:
            first_name[key] = name
        meta, parts = pack_tensor(tensor)
        packed.meta[name] = meta
        for part, value in parts.items():
            packed.tensors[f"{name}/{part}"] = value
    return packed


def unpack_state_dict(packed: Packed) -> dict[str, torch.Tensor]:
    """Decoded tensors; an alias is the very tensor object of the name it points to (ties survive loading)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in packed.tensors.items():
        name, _, part = key.rpartition("/")
        parts.setdefault(name, {})[part] = value
    out = {name: unpack_tensor(meta, parts.get(name, {}))
           for name, meta in packed.meta.items() if meta["format"] != "alias"}
    for name, meta in packed.meta.items():
        if meta["format"] == "alias":
            out[name] = out[meta["of"]]
    return {name: out[name] for name in packed.meta}
