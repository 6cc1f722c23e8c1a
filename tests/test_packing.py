"""The stored representation is exact and really smaller for sparse / clustered / quantized tensors."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import nn

from slimbench.deploy.packing import (
    Packed,
    gap_positions,
    gap_symbols,
    huffman_decode,
    huffman_encode,
    huffman_lengths,
    pack_state_dict,
    pack_tensor,
    unpack_state_dict,
    unpack_tensor,
)
from slimbench.deploy.structure import describe, load_into


def pruned(t: torch.Tensor, share: float) -> torch.Tensor:
    t = t.clone()
    t[torch.rand_like(t) < share] = 0
    return t


def test_round_trip_is_exact_for_every_format():
    """Each format where it is the smallest: a bit mask at moderate sparsity, relative indices at high sparsity."""
    torch.manual_seed(0)
    clustered = torch.randn(16)[torch.randint(0, 16, (128, 64))]
    q = torch.quantize_per_channel(torch.randn(32, 16), torch.rand(32) / 10 + 0.01, torch.zeros(32, dtype=torch.long),
                                   0, torch.qint8)
    state = {"dense": torch.randn(100, 10), "sparse": pruned(torch.randn(64, 32, 3, 3), 0.5),
             "relative": pruned(torch.randn(64, 32, 3, 3), 0.9), "codebook": clustered,
             "sparse_codebook": pruned(clustered, 0.5), "relative_codebook": pruned(clustered, 0.9),
             "small": torch.randn(5), "count": torch.tensor(7), "half": torch.randn(64, 64).half(), "q": q}
    packed = pack_state_dict(state)
    fmts = {name: meta["format"] for name, meta in packed.meta.items()}
    for name in ("dense", "sparse", "relative", "codebook", "sparse_codebook", "relative_codebook"):
        assert fmts[name] == name
    assert fmts["small"] == fmts["count"] == fmts["half"] == "dense" and fmts["q"] == "quantized_per_channel"
    restored = unpack_state_dict(Packed.from_payload(packed.to_payload()))
    for name, tensor in state.items():
        if tensor.is_quantized:
            assert torch.equal(restored[name].int_repr(), tensor.int_repr())
            assert torch.allclose(restored[name].q_per_channel_scales(), tensor.q_per_channel_scales())
        else:
            assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name


def test_sizes_are_the_real_encoded_bytes():
    torch.manual_seed(0)
    w = torch.randn(1000, 100)
    assert pack_tensor(w)[0]["format"] == "dense"
    half = pruned(w, 0.5)
    meta, parts = pack_tensor(half)
    nnz = int((half != 0).sum())
    assert meta["format"] == "sparse"
    assert sum(p.numel() * p.element_size() for p in parts.values()) == nnz * 4 + 100000 // 8
    most = pruned(w, 0.8)
    meta, parts = pack_tensor(most)
    nnz = int((most != 0).sum())
    position_bytes = sum(p.numel() * p.element_size() for k, p in parts.items() if k.startswith("gap_"))
    assert meta["format"] == "relative" and parts["values"].numel() == nnz
    # gaps between the non-zeros cost ~0.75 bit per weight at 80 % sparsity (entropy: 0.72), the mask 1 bit
    assert 0.72 * 100000 / 8 < position_bytes < 0.78 * 100000 / 8
    clustered = torch.linspace(-1, 1, 16)[torch.randint(0, 16, (100000,))]
    meta, parts = pack_tensor(clustered)
    assert meta["format"] == "codebook"
    assert parts["indices"].numel() == 100000 * 4 // 8  # 16 centroids -> 4-bit indices


def test_relative_positions_round_trip_across_escapes():
    positions = np.array([0, 1, 2, 40, 41, 300, 301, 1000, 1000 + 255 * 3])
    for cap in (3, 7, 255):
        symbols = gap_symbols(positions, cap)
        assert np.array_equal(gap_positions(symbols, cap), positions)
        assert (symbols <= cap).all()
    assert list(gap_symbols(np.array([0, 1, 9]), 3)) == [0, 0, 3, 3, 1]   # 7 zeros before 9: two escapes, then 1
    t = torch.zeros(5000)
    t[torch.from_numpy(positions)] = torch.arange(1.0, len(positions) + 1)
    meta, parts = pack_tensor(t)
    assert meta["format"].startswith("relative") and torch.equal(unpack_tensor(meta, parts), t)


def skewed_symbols(k: int, n: int, seed: int = 0) -> np.ndarray:
    """Symbols 0..k-1, each about half as frequent as the one before (like clustered weights near zero)."""
    p = 0.5 ** np.arange(k)
    return np.random.default_rng(seed).choice(k, size=n, p=p / p.sum())


def test_huffman_round_trips_and_beats_fixed_width_on_skewed_data():
    for k, n in ((2, 1000), (16, 50_000), (200, 20_000)):
        symbols = skewed_symbols(k, n)
        symbols = np.unique(symbols, return_inverse=True)[1]      # every symbol present, numbered 0..k'-1
        lengths = huffman_lengths(np.bincount(symbols))
        stream = huffman_encode(symbols, lengths)
        assert np.array_equal(huffman_decode(stream, lengths, n), symbols)
        fixed_bits = max(1, math.ceil(math.log2(len(lengths))))
        assert len(stream) <= math.ceil(n * fixed_bits / 8)
        assert (2.0 ** -lengths.astype(float)).sum() <= 1.0        # Kraft: a prefix code
    # skewed 16-symbol data: ~2 bits per value instead of 4
    symbols = skewed_symbols(16, 50_000)
    lengths = huffman_lengths(np.bincount(symbols, minlength=16) + 0)
    assert len(huffman_encode(symbols, lengths)) < 0.55 * 50_000 * 4 / 8


def test_huffman_code_length_is_limited_and_still_decodes():
    counts = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584])   # Fibonacci
    assert huffman_lengths(counts, max_bits=64).max() == len(counts) - 1                   # the worst case
    lengths = huffman_lengths(counts, max_bits=8)
    assert lengths.max() <= 8 and (2.0 ** -lengths.astype(float)).sum() <= 1.0
    symbols = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    assert np.array_equal(huffman_decode(huffman_encode(symbols, lengths), lengths, len(symbols)), symbols)


def test_each_clustered_form_is_chosen_where_smallest_and_round_trips():
    torch.manual_seed(0)
    values = torch.linspace(-1, 1, 16)
    skewed = values[torch.from_numpy(skewed_symbols(16, 40_000))].reshape(200, 200)
    state = {"huffman": skewed,
             "light": pruned(skewed, 0.1),            # zeros as one more (short) codeword beats marking them
             "sparse_huffman": pruned(skewed, 0.5),
             "relative_huffman": pruned(skewed, 0.9),  # Deep Compression: 90 % pruned, 16 clusters
             "codebook": values[torch.randint(0, 16, (200, 200))],
             "bf16": skewed.to(torch.bfloat16), "f64": skewed.double()}
    packed = pack_state_dict(state)
    fmts = {name: meta["format"] for name, meta in packed.meta.items()}
    assert fmts == {"huffman": "huffman", "light": "huffman", "sparse_huffman": "sparse_huffman",
                    "relative_huffman": "relative_huffman", "codebook": "codebook", "bf16": "huffman", "f64": "huffman"}
    for _name, tensor in state.items():     # the chosen form is no larger than the simple exact encodings
        meta, parts = pack_tensor(tensor)
        size = sum(p.numel() * p.element_size() for p in parts.values())
        flat = tensor.reshape(-1)
        nnz = int((flat != 0).sum())
        k = len(torch.unique(flat))
        assert size <= flat.numel() * flat.element_size()                                        # dense
        assert size <= math.ceil(flat.numel() / 8) + nnz * flat.element_size()                   # mask + values
        assert size <= k * flat.element_size() + math.ceil(flat.numel() * math.ceil(math.log2(k)) / 8) + 1  # codebook
    buf = io.BytesIO()
    torch.save(packed.to_payload(), buf)
    buf.seek(0)
    restored = unpack_state_dict(Packed.from_payload(torch.load(buf, weights_only=True)))
    for name, tensor in state.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name
    # a 16-value tensor whose values are skewed: Huffman-coded indices take about half the 4-bit width
    assert packed.tensors["huffman/stream"].numel() < 0.55 * 40_000 * 4 / 8


def test_tied_tensors_are_stored_once_and_stay_tied_after_reload():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    model[2].weight = model[0].weight                        # one nn.Parameter, two layers
    packed = pack_state_dict(model.state_dict())
    assert packed.meta["2.weight"] == {"shape": [32, 32], "dtype": "float32", "format": "alias", "of": "0.weight"}
    assert packed.formats()["alias"] == 1
    untied = pack_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    assert untied.nbytes - packed.nbytes == 32 * 32 * 4       # the shared tensor is counted once
    buf = io.BytesIO()
    torch.save({"packed": packed.to_payload(), "structure": describe(model)}, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    state = unpack_state_dict(Packed.from_payload(payload["packed"]))
    assert state["2.weight"] is state["0.weight"]
    fresh = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    load_into(fresh, payload["structure"], state)
    assert fresh[0].weight is fresh[2].weight
    assert len(list(fresh.parameters())) == len(list(model.parameters()))
    x = torch.randn(8, 32)
    assert torch.equal(fresh(x), model(x))


def test_views_of_one_storage_are_not_aliases():
    base = torch.randn(128, 8)
    state = {"a": base[:64], "b": base[64:], "c": base[:64]}
    packed = pack_state_dict(state)
    assert [m["format"] for m in packed.meta.values()] == ["dense", "dense", "alias"]
    restored = unpack_state_dict(packed)
    assert torch.equal(restored["b"], base[64:]) and restored["c"] is restored["a"]


def test_names_with_slashes_round_trip():
    """ONNX initializer names contain '/': a part is split off at the last '/', and part names have none."""
    torch.manual_seed(0)
    state = {"/features/0/Conv_w": pruned(torch.randn(64, 64), 0.9), "/features/0": torch.randn(8),
             "a/b/c": torch.linspace(-1, 1, 4)[torch.randint(0, 4, (64, 64))]}
    restored = unpack_state_dict(Packed.from_payload(pack_state_dict(state).to_payload()))
    assert set(restored) == set(state) and all(torch.equal(restored[k], v) for k, v in state.items())
