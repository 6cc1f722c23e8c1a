"""What a model is, counted: parameters (total, non-zero), multiply-accumulates, serialized size, peak memory."""

from __future__ import annotations

import gzip
import io
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from slimbench.deploy.packing import Packed


def count_params(model: nn.Module) -> tuple[int, int]:
    """Total and non-zero parameters; a tensor shared by several layers (weight tying) counts once."""
    total = nonzero = 0
    with torch.no_grad():
        for p in model.parameters():   # parameters() yields each shared tensor once
            total += p.numel()
            nonzero += int(torch.count_nonzero(p))
    return total, nonzero


def _attention_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *_args: object,
                     **_kwargs: object) -> int:
    return int(sdpa_flop_count(query.shape, key.shape, value.shape))


_attention_flops._get_raw = True  # type: ignore[attr-defined]   # FlopCounterMode passes tensors, not shapes
# On CPU `scaled_dot_product_attention` runs as one fused kernel that torch has no FLOP formula for (only its CUDA
# kernels have one): without this entry an attention layer's QKᵀ and AV products would count zero.
_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates for one input: FlopCounterMode counts 2 FLOPs per MAC."""
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_ATTENTION) as counter:
        model.eval()(example[:1])
    return int(counter.get_total_flops() // 2)


def serialized_sizes(packed: Packed, structure: dict | None = None) -> tuple[bytes, int]:
    """The artifact file (stored tensors, plus the layer structure a torch model is rebuilt from) and its gzip size."""
    buf = io.BytesIO()
    payload = packed.to_payload()
    if structure is not None:
        payload["structure"] = structure
    torch.save(payload, buf)
    data = buf.getvalue()
    return data, len(gzip.compress(data, compresslevel=9))


class _LiveTensorBytes(TorchDispatchMode):
    """Track bytes of tensors alive during a forward pass.

    The CPU allocator exposes no peak statistic (CUDA has max_memory_allocated), so we count storages
    created by each op and release them when their tensor is collected.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._ptrs: set[int] = set()

    def _release(self, ptr: int, nbytes: int) -> None:
        if ptr in self._ptrs:
            self._ptrs.discard(ptr)
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                ptr, nbytes = storage.data_ptr(), storage.nbytes()
                if ptr and ptr not in self._ptrs:
                    self._ptrs.add(ptr)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._release, ptr, nbytes)
        return out


def peak_memory_bytes(model: nn.Module, example: torch.Tensor) -> int | None:
    """Peak inference memory: weights plus the largest set of live activations during one forward."""
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    try:
        tracker = _LiveTensorBytes()
        with torch.inference_mode(), tracker:
            model(example)
        return weights + tracker.peak
    except Exception:  # some backends (e.g. packed int8 kernels) do not go through the dispatcher
        return None
