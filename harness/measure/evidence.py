"""Evidence, not claims: what a stored and deployed model really is, measured by the harness.

A method returns a model and may say what it did (`Outcome.compute`, `requested`, `achieved`); those words
are kept as the claim. The figures and the two labels come from here:
- storage: what the stored file holds for the weight tensors (dense fp32 / sparse / codebook / int8 / int4 / fp16
  / bf16, and tied tensors stored once), read from the packed form's encodings (packed low-bit weights: from the
  stored graph's MatMulNBits nodes, which say how many weights their bytes hold; an ExecuTorch program: from the
  constants its `.pte` stores, with their element types);
- compute: what kernels the deployed runtime executes (dense fp32 / masked — zeros in dense kernels / smaller
  dense — fewer multiply-adds than the reference / int8 / int4 weight-only / fp16 / bf16), read from the ONNX Runtime
  graph it really runs, from the layers OpenVINO compiled, from the kernels of an ExecuTorch program (its XNNPACK
  nodes by the element type of their weight, and its own float operators), or from the torch model's layers.
A claim the measurement contradicts is recorded and shown as "claim not verified".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from slimbench.deploy.executorch_runtime import ExecutorchModel, ProgramPacked, program_contents
from slimbench.deploy.matmul_nbits import NbitsWeight, nbits_weights
from slimbench.deploy.onnx_export import OnnxModel, kernel_precisions
from slimbench.deploy.openvino_runtime import OpenVinoModel
from slimbench.deploy.packing import Packed, unpack_state_dict
from slimbench.harness.measure.evidence_data import Claimed, ComputeEvidence, Evidence, StorageEvidence

__all__ = ["Claimed", "ComputeEvidence", "Evidence", "StorageEvidence", "check_claims", "compute_evidence", "gather",
           "storage_evidence"]

SHARE = 0.05             # an encoding or precision covering < 5 % of the weights does not name the label
MASKED_SPARSITY = 0.05   # at least this many zero weights in dense kernels reads as "masked"
SMALLER_MACS = 0.98      # fewer than 98 % of the reference's multiply-adds reads as "smaller dense"
SPARSITY_TOLERANCE = 0.01
BITS_TOLERANCE = 0.10    # relative: scales and zero points add a little to 8 bits per weight
_LAYER_KINDS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)


def _is_weight(meta: dict[str, Any]) -> bool:
    return len(meta.get("shape", [])) >= 2


def _encoding(meta: dict[str, Any]) -> str:
    fmt = meta["format"]
    if fmt.startswith("quantized") or meta.get("dtype") in ("int8", "uint8", "qint8", "quint8"):
        return "int8"
    if fmt == "dense":
        return {"float32": "dense fp32", "float16": "fp16", "bfloat16": "bf16"}.get(meta.get("dtype", ""),
                                                                                   f"dense {meta.get('dtype')}")
    # stored positions of non-zeros: a bit mask ("sparse") or Huffman-coded gaps ("relative", Han's relative
    # indices); values: raw, a codebook, or a Huffman-coded codebook ("huffman")
    sparse = fmt.startswith(("sparse", "relative"))
    codebook = fmt.endswith(("codebook", "huffman")) or fmt in ("codebook", "huffman")
    if sparse and codebook:
        return "sparse+codebook"
    if sparse:
        return "sparse"
    if codebook:
        return "codebook"
    return fmt


def _nbits_weights(packed: Packed) -> dict[str, NbitsWeight]:
    """The MatMulNBits weights of an ONNX model's stored graph (none for a torch model's state)."""
    graph = getattr(packed, "graph", b"")
    return nbits_weights(onnx.load_from_string(graph).graph) if graph else {}


def _label(encodings: Counter[str], weights: int, tied: int = 0) -> str:
    shares = [(enc, n) for enc, n in encodings.most_common() if n >= SHARE * weights]
    label = "+".join(enc for enc, _ in shares) or encodings.most_common(1)[0][0]
    return label + " (tied)" if tied else label


_PROGRAM_ENCODINGS = {"int8": "int8", "uint8": "int8", "int4": "int4", "float32": "dense fp32", "float16": "fp16",
                      "bfloat16": "bf16"}


def program_storage_evidence(packed: ProgramPacked) -> StorageEvidence:
    """An ExecuTorch program's weights (its constants of two or more dimensions), read from the `.pte`: each one's
    stored element type, its bytes (per-channel scales aside, as an ONNX graph's scales are), and its stored values."""
    weights = zeros = stored_bits = 0
    encodings: Counter[str] = Counter()
    distinct: dict[str, int] = {}
    for constant in program_contents(packed.program).constants:
        if len(constant.shape) < 2:
            continue
        n = int(np.prod(constant.shape, dtype=np.int64))
        weights += n
        stored_bits += 8 * constant.nbytes
        encodings[_PROGRAM_ENCODINGS.get(constant.dtype, f"dense {constant.dtype}")] += n
        if constant.values is not None:
            zeros += int((constant.values == 0).sum())
            distinct[constant.name] = int(np.unique(constant.values).size)
    if weights == 0:
        return StorageEvidence("empty", 0, 0.0, 0.0, 0, {}, {}, 0)
    return StorageEvidence(_label(encodings, weights), weights, zeros / weights, stored_bits / weights,
                           max(distinct.values(), default=0), distinct, dict(encodings), 0)


def storage_evidence(packed: Packed) -> StorageEvidence:
    """Read from the stored encodings, and from the decoded tensors (exactly what was stored)."""
    if isinstance(packed, ProgramPacked):
        return program_storage_evidence(packed)
    decoded = unpack_state_dict(packed)
    part_bytes: Counter[str] = Counter()
    for key, tensor in packed.tensors.items():
        part_bytes[key.rpartition("/")[0]] += tensor.numel() * tensor.element_size()
    weights = zeros = stored_bits = 0
    encodings: Counter[str] = Counter()
    distinct: dict[str, int] = {}
    tied = 0
    nbits = _nbits_weights(packed)
    side = {name for w in nbits.values() for name in (w.scales, w.zero_points) if name}
    for name, w in nbits.items():   # packed low-bit codes: K·N weights in their bytes plus scales and zero points
        codes, values = w.decode({k: decoded[k].numpy() for k in (w.b, w.scales, w.zero_points) if k})
        weights += codes.size
        zeros += int((values == 0).sum())
        stored_bits += 8 * sum(part_bytes[k] for k in (w.b, w.scales, w.zero_points) if k)
        encodings[f"int{w.bits}"] += codes.size
        distinct[name] = int(np.unique(codes).size)
    for name, meta in packed.meta.items():
        if not _is_weight(meta) or name in nbits or name in side:
            continue
        if meta["format"] == "alias":
            tied += 1
            continue
        t = decoded[name]
        weights += t.numel()
        zeros += int((t == 0).sum())
        stored_bits += 8 * part_bytes[name]
        encodings[_encoding(meta)] += t.numel()
        distinct[name] = int(torch.unique(t).numel())
    if weights == 0:
        return StorageEvidence("empty", 0, 0.0, 0.0, 0, {}, {}, tied)
    return StorageEvidence(_label(encodings, weights, tied), weights, zeros / weights, stored_bits / weights,
                           max(distinct.values()), distinct, dict(encodings), tied)


def compute_evidence(deployed: nn.Module, counted: nn.Module, macs: int, reference_macs: int,
                     sparsity: float) -> ComputeEvidence:
    """The arithmetic of the kernels that run: the optimised ONNX Runtime graph, or the torch layers' dtypes."""
    if isinstance(deployed, OnnxModel):
        kernels = kernel_precisions(deployed.onnx_bytes)
    elif isinstance(deployed, OpenVinoModel):
        kernels = deployed.kernel_precisions()
    elif isinstance(deployed, ExecutorchModel):
        kernels = program_contents(deployed.pte).kernels
    else:
        kernels = dict(Counter(str(m.weight.dtype).removeprefix("torch.") for m in counted.modules()
                               if isinstance(m, _LAYER_KINDS) and isinstance(getattr(m, "weight", None), torch.Tensor)))
    total = sum(kernels.values()) or 1
    names = {"float32": "dense fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "int8"}
    shares: Counter[str] = Counter()
    for dtype, n in kernels.items():
        shares[names.get(dtype, dtype)] += n
    parts = [kind for kind, n in shares.most_common() if n >= SHARE * total] or ["dense fp32"]
    if macs < SMALLER_MACS * reference_macs:
        parts = ["smaller dense" if p == "dense fp32" else p for p in parts]
    elif parts == ["dense fp32"] and sparsity >= MASKED_SPARSITY:
        parts = ["masked"]   # zeros in dense kernels: the same work is done
    return ComputeEvidence("+".join(parts), kernels, macs, reference_macs)


def gather(packed: Packed, deployed: nn.Module, counted: nn.Module, macs: int, reference_macs: int,
           claimed_compute: str, requested: dict[str, Any], achieved: dict[str, Any]) -> Evidence:
    storage = storage_evidence(packed)
    compute = compute_evidence(deployed, counted, macs, reference_macs, storage.sparsity)
    evidence = Evidence(storage, compute, Claimed(claimed_compute, requested, achieved))
    evidence.disagreements = check_claims(evidence)
    return evidence


def check_claims(evidence: Evidence) -> list[str]:
    """Each claim the measurement can check, checked; a disagreement is one line saying claim vs measured."""
    out = []
    storage, compute, claimed = evidence.storage, evidence.compute, evidence.claimed
    achieved = claimed.achieved
    if claimed.compute == "physical" and compute.label in ("dense fp32", "masked"):
        out.append(f"claims physically faster compute, but the runtime executes {compute.label} kernels "
                   f"({compute.kernels})")
    if isinstance(achieved.get("sparsity"), (int, float)):
        if abs(achieved["sparsity"] - storage.sparsity) > SPARSITY_TOLERANCE:
            out.append(f"claims sparsity {achieved['sparsity']:.3f}, measured {storage.sparsity:.3f} "
                       f"({storage.weights:,} weights)")
    if isinstance(achieved.get("weight_bits"), (int, float)):
        if storage.bits_per_weight > achieved["weight_bits"] * (1 + BITS_TOLERANCE):
            out.append(f"claims {achieved['weight_bits']:g} bits per weight, the stored form has "
                       f"{storage.bits_per_weight:.2f}")
    for key in ("clusters", "distinct_values"):
        if isinstance(achieved.get(key), int) and storage.max_distinct_values > achieved[key]:
            out.append(f"claims at most {achieved[key]} distinct values per layer, measured up to "
                       f"{storage.max_distinct_values}")
    if isinstance(achieved.get("macs"), (int, float)) and achieved["macs"] < compute.macs * 0.99:
        out.append(f"claims {achieved['macs']:,.0f} multiply-adds, measured {compute.macs:,}")
    return out
