"""Measurement of one model on one task: quality, size, compute, latency and memory, all measured."""

from __future__ import annotations

import gzip
import io
import math
import statistics
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from methods.packing import Packed
from tasks.base import Task


@dataclass
class MeasureConfig:
    latency_batch: int = 64          # the "batch N" latency next to batch 1
    threads: int = 1                 # fixed intra-op threads for latency (stable on a shared 2-core VM)
    warmup: int = 5
    min_run_time: float = 0.3        # seconds per blocked_autorange
    rounds: int = 3                  # interleaved rounds; the median of round medians is reported
    peak_memory: bool = True


@dataclass
class Metrics:
    accuracy: float
    macro_f1: float
    params: int
    nonzero_params: int
    stored_bytes: int                # the packed (compressed) representation's tensor bytes
    gzip_bytes: int                  # gzip of the serialized artifact file
    file_bytes: int
    macs: int
    latency_b1_ms: float
    latency_bn_ms: float
    latency_batch: int
    peak_memory_bytes: int | None
    eval_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def evaluate(model: nn.Module, task: Task) -> tuple[float, float]:
    """Accuracy and macro-F1 on the test split (torchmetrics)."""
    model.eval()
    acc = MulticlassAccuracy(num_classes=task.num_classes, average="micro")
    f1 = MulticlassF1Score(num_classes=task.num_classes, average="macro")
    for x, y in task.test_dataloader():
        logits = model(x)
        acc.update(logits, y)
        f1.update(logits, y)
    return float(acc.compute()), float(f1.compute())


def count_params(model: nn.Module) -> tuple[int, int]:
    """Total and non-zero parameters (quantized modules keep weights in packed params: count those too)."""
    total = nonzero = 0
    seen: set[int] = set()
    for tensor in _weight_tensors(model):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        t = tensor.int_repr() if tensor.is_quantized else tensor
        total += t.numel()
        nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def _weight_tensors(model: nn.Module) -> list[torch.Tensor]:
    tensors = [p.detach() for p in model.parameters()]
    for module in model.modules():  # quantized layers hide weights outside `parameters()`
        weight_fn = getattr(module, "weight", None)
        if callable(weight_fn) and not isinstance(weight_fn, nn.Module):
            try:
                w = weight_fn()
            except Exception:  # not a quantized accessor
                continue
            if isinstance(w, torch.Tensor):
                tensors.append(w)
    return tensors


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates for one input: FlopCounterMode counts 2 FLOPs per MAC."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(example[:1])
    return int(counter.get_total_flops() // 2)


def serialized_sizes(packed: Packed) -> tuple[bytes, int]:
    buf = io.BytesIO()
    torch.save(packed.to_payload(), buf)
    data = buf.getvalue()
    return data, len(gzip.compress(data, compresslevel=9))


def latency_ms(models: dict[str, Callable[[torch.Tensor], Any]], example: torch.Tensor, cfg: MeasureConfig) -> dict[str, float]:
    """Median latency per model, interleaving models round by round so drift on a shared VM hits all alike.

    torch.utils.benchmark times each block; the block size is chosen once per model from the warm-up, because
    `blocked_autorange` re-estimates it on every call by growing it tenfold, which for a sub-millisecond model
    spends up to ten times `min_run_time` per call (measured: 46 of a 50 s measurement on a 0.1 ms model).
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.inference_mode():
            timers = {
                name: benchmark.Timer("m(x)", globals={"m": m, "x": example}, num_threads=cfg.threads)
                for name, m in models.items()
            }
            block = {name: _block_size(t, cfg) for name, t in timers.items()}
            medians: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(cfg.rounds):
                for name, t in timers.items():
                    medians[name].append(_timed_blocks(t, block[name], cfg.min_run_time))
    finally:
        torch.set_num_threads(prev)
    return {name: statistics.median(v) * 1000 for name, v in medians.items()}


BLOCK_SECONDS = 0.01   # a timed block lasts at least this long, so the timer's own overhead stays < 0.1 %


def _block_size(timer: benchmark.Timer, cfg: MeasureConfig) -> int:
    """Calls per timed block, from the mean of the warm-up calls."""
    per_call = timer.timeit(max(cfg.warmup, 1)).mean
    return max(1, math.ceil(BLOCK_SECONDS / max(per_call, 1e-9)))


def _timed_blocks(timer: benchmark.Timer, number: int, min_run_time: float) -> float:
    """Median seconds per call over blocks of `number` calls, timed until `min_run_time` has passed (≥ 1 block)."""
    per_call: list[float] = []
    spent = 0.0
    while not per_call or spent < min_run_time:
        m = timer.timeit(number)
        per_call.append(m.mean)
        spent += m.mean * number
    return statistics.median(per_call)


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
            if isinstance(t, torch.Tensor) and not t.is_quantized and t.device.type == "cpu":
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
    if example.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(example)
        return int(torch.cuda.max_memory_allocated())
    try:
        tracker = _LiveTensorBytes()
        with torch.inference_mode(), tracker:
            model(example)
        return weights + tracker.peak
    except Exception:  # some backends (e.g. packed int8 kernels) do not go through the dispatcher
        return None
