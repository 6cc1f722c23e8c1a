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

from slimbench.core.errors import StoredFormError

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
    def from_payload(cls, payload: dict[str, Any]) -> Packed:
        if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_TAG:
            raise StoredFormError(f"not a slimbench packed state (missing format tag {PAYLOAD_TAG!r})")
        if not isinstance(payload.get("tensors"), dict) or not isinstance(payload.get("meta"), dict):
            raise StoredFormError("a packed state needs 'tensors' and 'meta' mappings")
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


class MalformedEncoding(ValueError):
    """An encoding that cannot be decoded as it claims (wrong lengths, an index past its codebook, ...): the message
    says what; `unpack_tensor` adds the tensor's name and format (as `StoredFormError`)."""


def huffman_decode(stream: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """Inverse of `huffman_encode`: `count` symbols; MalformedEncoding when the stream is not `count` codewords of
    this code, back to back, filling exactly its bytes (as `huffman_encode` writes them).

    Every bit position's next `max_len` bits are looked up in a table at once (numpy); only the walk from one
    codeword to the next stays a Python loop, over plain ints.
    """
    lengths = np.asarray(lengths).astype(np.int64)
    stream = np.asarray(stream)
    if count == 0:
        if len(stream):
            raise MalformedEncoding(f"the Huffman stream holds {len(stream)} bytes for 0 symbols")
        return np.zeros(0, dtype=np.int64)
    if lengths.size == 0 or int(lengths.max()) == 0:
        raise MalformedEncoding(f"{count} symbols to decode, but the code has no codeword (all code lengths are 0)")
    max_len = int(lengths.max())
    if max_len > HUFFMAN_MAX_BITS or int(lengths.min()) < 0:
        raise MalformedEncoding(f"code lengths must lie in 0..{HUFFMAN_MAX_BITS}, got {int(lengths.min())}..{max_len}")
    if sum(1 << (max_len - n) for n in lengths.tolist() if n) > 1 << max_len:
        raise MalformedEncoding(f"the code lengths {lengths.tolist()[:16]}{' ...' if len(lengths) > 16 else ''} are "
                                f"not a prefix code (Kraft sum above 1)")
    codes = canonical_codes(lengths)
    symbol_of = np.zeros(1 << max_len, dtype=np.int64)
    length_of = np.zeros(1 << max_len, dtype=np.int64)
    for s, (c, n) in enumerate(zip(codes.tolist(), lengths.tolist())):
        if n:
            lo, hi = c << (max_len - n), (c + 1) << (max_len - n)
            symbol_of[lo:hi], length_of[lo:hi] = s, n
    bits = np.unpackbits(stream.astype(np.uint8, copy=False)).astype(np.int64)
    nbits = len(bits)
    bits = np.concatenate([bits, np.zeros(max_len, dtype=np.int64)])
    window = np.zeros(nbits, dtype=np.int64)
    for j in range(max_len):
        window = (window << 1) | bits[j: j + nbits]
    step = length_of[window].tolist()
    starts, pos = [0] * count, 0
    for i in range(count):
        if pos >= nbits:
            raise MalformedEncoding(f"the Huffman stream ({len(stream)} bytes) ends after {i} of {count} symbols")
        starts[i] = pos
        pos += step[pos]
    at = np.asarray(starts, dtype=np.int64)
    found = length_of[window[at]]
    if not found.all():
        i = int(np.flatnonzero(found == 0)[0])
        raise MalformedEncoding(f"symbol {i} of {count}: the bits at stream position {starts[i]} are no codeword of "
                                f"the code")
    if pos > nbits:
        raise MalformedEncoding(f"the Huffman stream ({len(stream)} bytes) ends inside symbol {count - 1} of {count}")
    if len(stream) != math.ceil(pos / 8):
        raise MalformedEncoding(f"the Huffman stream holds {len(stream)} bytes; its {count} symbols take "
                                f"{math.ceil(pos / 8)} ({pos} bits)")
    return symbol_of[window[at]]


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
    assert best is not None  # GAP_CAPS is not empty
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
QUANTIZED_FORMATS = ("quantized_per_tensor", "quantized_per_channel")
FORMATS = ("dense", "codebook", "huffman",
           *("_".join(p for p in (where, what) if p) for where in POSITION_FORMATS for what in VALUE_FORMATS),
           *QUANTIZED_FORMATS, "alias")
_VALUE_PARTS = {"": ("values",), "codebook": ("codebook", "bits", "indices"),
                "huffman": ("codebook", "code_lengths", "stream")}
_POSITION_PARTS = {"sparse": ("mask",), "relative": ("gap_lengths", "gap_stream", "gap_count")}
_QUANTIZED_INT = {torch.qint8: torch.int8, torch.quint8: torch.uint8, torch.qint32: torch.int32}

# What each format reproduces when decoded — its precision — and so what a stored form is checked against
# (deploy.runtimes.check_packed compares the decoded tensors with the model's own):
# - dense, codebook, huffman, sparse*, relative*: exact. The values are stored in the tensor's `dtype` (the data,
#   raw values or codebook entries must have that dtype), and decode to exactly those numbers; zeros a position
#   format leaves out decode to +0.0. A stored dtype narrower than the model's (float16 storage of a float32
#   tensor) is exact only for weights that float16 holds: the model's weights cast to float16 and back must be the
#   weights themselves, or the stored form is not the model that was measured.
# - quantized_per_tensor / quantized_per_channel: the integer values, zero points, axis and quantized dtype exactly;
#   the scales at float32 (they are stored as float32, so a model scale is compared cast to float32 and back).
# - alias: exactly the tensor it names (decoded as that very tensor object), with the same shape and dtype.


def format_parts(fmt: str) -> tuple[str, ...]:
    """The parts a format stores: exactly these, no more (every stored byte must be one that decoding reads)."""
    if fmt == "dense":
        return ("data",)
    if fmt == "alias":
        return ()
    if fmt in QUANTIZED_FORMATS:
        return ("int_repr", "scales", "zero_points")
    if fmt in ("codebook", "huffman"):
        return _VALUE_PARTS[fmt]
    where, _, what = fmt.partition("_")
    return _POSITION_PARTS[where] + _VALUE_PARTS[what]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_meta(meta: Any) -> tuple[list[int], torch.dtype, str]:
    """(shape, dtype, format) of one tensor's metadata; MalformedEncoding says which key is missing or wrong."""
    if not isinstance(meta, dict):
        raise MalformedEncoding(f"its metadata must be a mapping with 'shape', 'dtype' and 'format', got "
                                f"{type(meta).__name__}")
    missing = [k for k in ("shape", "dtype", "format") if k not in meta]
    if missing:
        raise MalformedEncoding(f"its metadata lacks {missing} (it has {sorted(map(str, meta))})")
    fmt, shape, dtype_name = meta["format"], meta["shape"], meta["dtype"]
    if fmt not in FORMATS:
        raise MalformedEncoding(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if (not isinstance(shape, (list, tuple))
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise MalformedEncoding(f"shape must be a list of non-negative integers, got {shape!r}")
    dtype = getattr(torch, dtype_name, None) if isinstance(dtype_name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise MalformedEncoding(f"dtype {dtype_name!r} is not a torch dtype")
    if (fmt in QUANTIZED_FORMATS) != (dtype in _QUANTIZED_INT):
        raise MalformedEncoding(f"dtype {dtype_name} does not fit the format: quantized dtypes "
                                f"({', '.join(map(_dtype_name, _QUANTIZED_INT))}) go with "
                                f"{' / '.join(QUANTIZED_FORMATS)} and only with them")
    if fmt == "quantized_per_channel":
        axis = meta.get("axis")
        if not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(shape):
            raise MalformedEncoding(f"'axis' must be a dimension of shape {list(shape)}, got {axis!r}")
    if fmt == "alias" and not isinstance(meta.get("of"), str):
        raise MalformedEncoding(f"an alias must name the tensor it stores in 'of', got {meta.get('of')!r}")
    return list(shape), dtype, fmt


def _part(parts: Parts, key: str, dtype: torch.dtype | tuple[torch.dtype, ...] | None = None,
          numel: int | None = None, flat: bool = True) -> torch.Tensor:
    """One stored part, checked: a CPU tensor of the dtype and length the format reads."""
    value = parts[key]
    dtypes = (dtype,) if isinstance(dtype, torch.dtype) else dtype
    if dtypes is not None and value.dtype not in dtypes:
        raise MalformedEncoding(f"part {key!r} must be {' or '.join(map(_dtype_name, dtypes))}, got "
                                f"{_dtype_name(value.dtype)}")
    if flat and value.dim() != 1:
        raise MalformedEncoding(f"part {key!r} must be one-dimensional, got shape {list(value.shape)}")
    if numel is not None and value.numel() != numel:
        raise MalformedEncoding(f"part {key!r} holds {value.numel()} elements ({value.numel() * value.element_size()}"
                                f" bytes); the format needs {numel}")
    return value.detach().cpu()


def _single_int(parts: Parts, key: str, dtype: torch.dtype | tuple[torch.dtype, ...]) -> int:
    return int(_part(parts, key, dtype, numel=1)[0])


def _values(what: str, parts: Parts, count: int, dtype: torch.dtype) -> torch.Tensor:
    if what == "":
        return _part(parts, "values", dtype, numel=count)
    codebook = _part(parts, "codebook", dtype)
    k = codebook.numel()
    if what == "huffman":
        lengths = _part(parts, "code_lengths", torch.uint8).numpy()
        if len(lengths) != k:
            raise MalformedEncoding(f"part 'code_lengths' holds {len(lengths)} code lengths, one per codebook value, "
                                    f"but the codebook holds {k} values")
        idx = huffman_decode(_part(parts, "stream", torch.uint8).numpy(), lengths, count)
    else:
        bits = _single_int(parts, "bits", torch.uint8)
        if not 1 <= bits <= 8:
            raise MalformedEncoding(f"'bits' must be 1..8 (indices into at most {MAX_CODEBOOK} values), got {bits}")
        indices = _part(parts, "indices", torch.uint8, numel=math.ceil(count * bits / 8)).numpy()
        idx = unpack_bits(indices, bits, count).astype(np.int64)
    if count and (k == 0 or int(idx.max()) >= k):
        at = int(np.flatnonzero(idx >= k)[0])
        raise MalformedEncoding(f"codebook index {int(idx[at])} (value {at} of {count}) is out of range of the "
                                f"{k}-value codebook")
    return codebook[torch.from_numpy(idx)]


def _decode(meta: dict[str, Any], parts: Parts) -> torch.Tensor:
    shape, dtype, fmt = check_meta(meta)
    want = format_parts(fmt)
    missing, extra = [p for p in want if p not in parts], sorted(p for p in parts if p not in want)
    if missing or extra:
        raise MalformedEncoding(f"stores parts {sorted(parts)}, but the format stores exactly {list(want)}"
                                + (f" (missing {missing})" if missing else "") + (f" (extra {extra})" if extra else ""))
    for key, value in parts.items():
        if not isinstance(value, torch.Tensor):
            raise MalformedEncoding(f"part {key!r} must be a tensor, got {type(value).__name__}")
    numel = math.prod(shape)
    if fmt == "dense":
        return _part(parts, "data", dtype, numel=numel, flat=False).reshape(shape)
    if fmt in QUANTIZED_FORMATS:
        int_repr = _part(parts, "int_repr", _QUANTIZED_INT[dtype], flat=False)
        if list(int_repr.shape) != shape:
            raise MalformedEncoding(f"part 'int_repr' has shape {list(int_repr.shape)}, not {shape}")
        channels = shape[meta["axis"]] if fmt == "quantized_per_channel" else 1
        scales = _part(parts, "scales", (torch.float32, torch.float64), numel=channels)
        zero_points = _part(parts, "zero_points", (torch.int32, torch.int64), numel=channels)
        if not (torch.isfinite(scales).all() and (scales > 0).all()):
            raise MalformedEncoding(f"scales must be finite and positive, got {scales.tolist()[:8]}")
        if fmt == "quantized_per_channel":
            return torch._make_per_channel_quantized_tensor(int_repr, scales.double(), zero_points.long(), meta["axis"])
        return torch._make_per_tensor_quantized_tensor(int_repr, float(scales[0]), int(zero_points[0]))
    if fmt in ("codebook", "huffman"):
        return _values(fmt, parts, numel, dtype).reshape(shape)
    where, _, what = fmt.partition("_")
    if where == "sparse":
        mask = _part(parts, "mask", torch.uint8, numel=math.ceil(numel / 8)).numpy()
        positions = np.flatnonzero(np.unpackbits(mask)[:numel])
    else:
        lengths = _part(parts, "gap_lengths", torch.uint8).numpy()
        if len(lengths) < 2:
            raise MalformedEncoding(f"part 'gap_lengths' needs at least 2 code lengths (gaps 0..cap-1 and the "
                                    f"escape), got {len(lengths)}")
        count = _single_int(parts, "gap_count", (torch.int32, torch.int64))
        if count < 0:
            raise MalformedEncoding(f"'gap_count' must be non-negative, got {count}")
        symbols = huffman_decode(_part(parts, "gap_stream", torch.uint8).numpy(), lengths, count)
        cap = len(lengths) - 1
        if count and symbols[-1] == cap:
            raise MalformedEncoding("the gap stream ends in an escape symbol (a gap with no non-zero after it)")
        positions = gap_positions(symbols, cap)
        if len(positions) and int(positions[-1]) >= numel:
            raise MalformedEncoding(f"the gaps place a non-zero at position {int(positions[-1])}, past the tensor's "
                                    f"{numel} elements")
    out = torch.zeros(numel, dtype=dtype)
    out[torch.from_numpy(positions)] = _values(what, parts, len(positions), dtype)
    return out.reshape(shape)


def unpack_tensor(meta: dict[str, Any], parts: dict[str, torch.Tensor], name: str | None = None) -> torch.Tensor:
    """The tensor `meta` and `parts` encode; StoredFormError (naming `name` and the format) when they are malformed
    or inconsistent — never a KeyError or IndexError from inside a decoder."""
    fmt = meta.get("format") if isinstance(meta, dict) and isinstance(meta.get("format"), str) else None
    try:
        return _decode(meta, parts)
    except StoredFormError:
        raise
    except MalformedEncoding as exc:
        raise StoredFormError(str(exc), name, fmt) from None
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError, OverflowError, MemoryError) as exc:
        # a case the checks above missed: still one clear line, the original error chained for a traceback
        raise StoredFormError(f"cannot be decoded ({exc.__class__.__name__}: {exc})", name, fmt) from exc


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
    """Decoded tensors; an alias is the very tensor object of the name it points to (ties survive loading).

    Every stored tensor must belong to a tensor of the metadata and be a part its format reads, and every encoding
    must be well formed: otherwise StoredFormError names the tensor, its format and what is wrong.
    """
    if not isinstance(packed, Packed):
        raise StoredFormError(f"expected a slimbench Packed (deploy.packing), got {type(packed).__name__}")
    if not isinstance(packed.tensors, dict) or not isinstance(packed.meta, dict):
        raise StoredFormError(f"tensors and meta must be mappings, got {type(packed.tensors).__name__} and "
                              f"{type(packed.meta).__name__}")
    bad_names = [n for n in packed.meta if not isinstance(n, str)]
    if bad_names:
        raise StoredFormError(f"tensor names must be strings, got {bad_names[:5]}")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in packed.tensors.items():
        name, _, part = key.rpartition("/") if isinstance(key, str) else ("", "", "")
        if not name or not part:
            raise StoredFormError(f"stored tensor key {key!r} is not '<tensor name>/<part>'")
        parts.setdefault(name, {})[part] = value
    orphans = sorted(set(parts) - set(packed.meta))
    if orphans:
        raise StoredFormError(f"stored tensors {[f'{n}/{p}' for n in orphans[:3] for p in sorted(parts[n])][:5]} "
                              f"belong to no tensor of the metadata ({len(orphans)} such tensor name(s)): bytes that "
                              f"decoding never reads", orphans[0])
    out = {name: unpack_tensor(meta, parts.get(name, {}), name)
           for name, meta in packed.meta.items() if not (isinstance(meta, dict) and meta.get("format") == "alias")}
    for name, meta in packed.meta.items():
        if isinstance(meta, dict) and meta.get("format") == "alias":
            try:
                shape, dtype, _ = check_meta(meta)
            except MalformedEncoding as exc:
                raise StoredFormError(str(exc), name, "alias") from None
            of = meta["of"]
            if name in parts:
                raise StoredFormError(f"an alias stores no parts, but {sorted(parts[name])} are stored under it", name,
                                      "alias")
            if of not in out:
                raise StoredFormError(f"it names {of!r}, which is "
                                      + ("another alias" if of in packed.meta else "not a stored tensor"),
                                      name, "alias")
            target = out[of]
            if list(target.shape) != shape or target.dtype != dtype:
                raise StoredFormError(f"it says {shape} {_dtype_name(dtype)}, but {of!r} decodes to "
                                      f"{list(target.shape)} {_dtype_name(target.dtype)}", name, "alias")
            out[name] = target
    return {name: out[name] for name in packed.meta}
