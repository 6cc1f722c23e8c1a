"""CPU latency with torch.utils.benchmark: fixed threads, warm-up, interleaved rounds, median of round medians."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

# torch.utils.benchmark imports cpp_extension, which warns on every start that no CUDA runtime is found; CPU
# timing never compiles extensions, so that line is noise here.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

from slimbench.core.params import added, bounded  # noqa: E402


@dataclass
class MeasureConfig:
    latency_batch: int = bounded(64, ge=1)      # the "batch N" latency next to batch 1
    threads: int = bounded(1, ge=1)             # fixed intra-op threads (stable when other processes share the CPU)
    warmup: int = bounded(5, ge=1)
    min_run_time: float = bounded(0.3, gt=0)    # seconds of timed blocks per round
    rounds: int = bounded(3, ge=1)              # interleaved rounds; the median of round medians is reported
    peak_memory: bool = True
    robustness: bool = True                     # corrupted test copies and per-class accuracy (tasks/corruptions.py)
    corrupted_examples: int = bounded(500, ge=1)   # stratified test subset each corruption × severity is drawn from
    # where every model and its reference are timed (a method's own runtime is always added); registered runtimes
    runtimes: tuple[str, ...] = added(("eager", "onnxruntime"))
    # also evaluate test accuracy in each of those runtimes, with the size of its own file and the precision it ran
    runtime_accuracy: bool = added(False)
    # attributions of the model and its baseline, their faithfulness and agreement (harness/measure/explanations.py)
    explanations: bool = added(False)
    explanation_examples: int = added(32, ge=2)   # the stratified test subset they explain

    def __post_init__(self) -> None:
        from slimbench.deploy.runtimes import check_runtimes

        self.runtimes = check_runtimes(list(self.runtimes), "measure.runtimes")


def latency_rounds_ms(models: Mapping[str, Callable[[torch.Tensor], Any]], example: torch.Tensor,
                      cfg: MeasureConfig) -> dict[str, list[float]]:
    """Per-round median latency of each model (ms), interleaving models round by round so drift on a shared machine
    hits all alike; the order of the models alternates between rounds so none is always timed first.

    Ratios taken round by round give the noise band of a speedup: a band that contains 1 is no speedup.

    torch.utils.benchmark times each block; the block size is chosen once per model from the warm-up, because
    `blocked_autorange` re-estimates it on every call by growing it tenfold, which for a sub-millisecond model
    spends up to ten times `min_run_time` per call.
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
            order = list(timers)
            for r in range(cfg.rounds):
                for name in (order if r % 2 == 0 else order[::-1]):
                    medians[name].append(_timed_blocks(timers[name], block[name], cfg.min_run_time))
    finally:
        torch.set_num_threads(prev)
    return {name: [s * 1000 for s in v] for name, v in medians.items()}


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


