"""The stored representation is exact and really smaller for sparse / clustered / quantized tensors."""

from __future__ import annotations

import torch

from slimbench.deploy.packing import Packed, pack_state_dict, pack_tensor, unpack_state_dict


def test_round_trip_is_exact_for_every_format():
    torch.manual_seed(0)
    sparse = torch.randn(64, 32, 3, 3)
    sparse[sparse.abs() < 1.2] = 0
    clustered = torch.randn(16)[torch.randint(0, 16, (128, 64))]
    sparse_clustered = clustered.clone()
    sparse_clustered[torch.rand_like(sparse_clustered) < 0.7] = 0
    q = torch.quantize_per_channel(torch.randn(32, 16), torch.rand(32) / 10 + 0.01, torch.zeros(32, dtype=torch.long), 0, torch.qint8)
    state = {"dense": torch.randn(100, 10), "sparse": sparse, "codebook": clustered, "sc": sparse_clustered,
             "small": torch.randn(5), "count": torch.tensor(7), "half": torch.randn(64, 64).half(), "q": q}
    packed = pack_state_dict(state)
    fmts = {name: meta["format"] for name, meta in packed.meta.items()}
    assert fmts["dense"] == "dense" and fmts["sparse"] == "sparse" and fmts["codebook"] == "codebook"
    assert fmts["sc"] == "sparse_codebook" and fmts["q"] == "quantized_per_channel"
    restored = unpack_state_dict(Packed.from_payload(packed.to_payload()))
    for name, tensor in state.items():
        if tensor.is_quantized:
            assert torch.equal(restored[name].int_repr(), tensor.int_repr())
            assert torch.allclose(restored[name].q_per_channel_scales(), tensor.q_per_channel_scales())
        else:
            assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name


def test_sizes_are_the_real_encoded_bytes():
    w = torch.randn(1000, 100)
    assert pack_tensor(w)[0]["format"] == "dense"
    w[torch.rand_like(w) < 0.8] = 0
    meta, parts = pack_tensor(w)
    nnz = int((w != 0).sum())
    assert meta["format"] == "sparse"
    assert sum(p.numel() * p.element_size() for p in parts.values()) == nnz * 4 + 100000 // 8
    clustered = torch.linspace(-1, 1, 16)[torch.randint(0, 16, (100000,))]
    meta, parts = pack_tensor(clustered)
    assert meta["format"] == "codebook"
    assert parts["indices"].numel() == 100000 * 4 // 8  # 16 centroids -> 4-bit indices
