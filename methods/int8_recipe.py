"""Choosing the int8 weight granularity per model by measurement, not by a fixed default.

Per-channel weight scales keep more accuracy; per-tensor scales let the int8 kernels skip a per-channel multiply
and run faster on some CPUs and models. Which matters more depends on the model and the machine, so `quant.ptq_int8`
with `weights: auto` quantizes both from one calibration, evaluates both on the validation split (never the test
split), times both at batch 1 in interleaved rounds, and keeps per-tensor only when it is faster in every round and
loses no more validation accuracy than the budget allows. Both measurements go into the record, so the choice
can be checked; it depends on the CPU it was made on, which the record names.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from slimbench.deploy.latency.timing import MeasureConfig, latency_rounds_ms
from slimbench.deploy.onnx_export import OnnxModel

EVAL_BATCH = 256
TIMING = dict(threads=1, warmup=5, min_run_time=0.2, rounds=5)   # batch-1 rounds: enough for a band that excludes 1


@dataclass
class Candidate:
    weights: str              # "per_channel" or "per_tensor"
    val_accuracy: float
    val_loss: float
    b1_ms: float              # median over the interleaved rounds


def _validate(graph: bytes, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model = OnnxModel(graph, threads=torch.get_num_threads())
    logits = torch.cat([model(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]).float()
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def choose_weights(graphs: dict[str, bytes], x: torch.Tensor, y: torch.Tensor, example: torch.Tensor,
                   max_accuracy_drop: float) -> tuple[str, dict[str, Any]]:
    """The granularity to deploy ("per_channel" or "per_tensor") and the measurements behind the choice."""
    rounds = latency_rounds_ms({k: OnnxModel(g, threads=1) for k, g in graphs.items()}, example[:1],
                               MeasureConfig(**TIMING))   # type: ignore[arg-type]
    candidates = {}
    for name, graph in graphs.items():
        accuracy, loss = _validate(graph, x, y)
        b1_ms = round(statistics.median(rounds[name]), 4)
        candidates[name] = Candidate(name, round(accuracy, 6), round(loss, 6), b1_ms)
    ratios = [c / t for c, t in zip(rounds["per_channel"], rounds["per_tensor"])]   # > 1: per-tensor is faster
    accuracy_cost = candidates["per_channel"].val_accuracy - candidates["per_tensor"].val_accuracy
    faster = min(ratios) > 1.0
    chosen = "per_tensor" if faster and accuracy_cost <= max_accuracy_drop else "per_channel"
    why = (f"per-tensor is faster in every round (b1 speedup {min(ratios):.2f}-{max(ratios):.2f}x) and costs "
           f"{accuracy_cost * 100:+.2f} pts of validation accuracy (budget {max_accuracy_drop * 100:.2f})"
           if chosen == "per_tensor" else
           f"per-tensor {'is' if faster else 'is not'} faster in every round (b1 speedup "
           f"{min(ratios):.2f}-{max(ratios):.2f}x) and costs {accuracy_cost * 100:+.2f} pts of validation accuracy "
           f"(budget {max_accuracy_drop * 100:.2f})")
    return chosen, {"chosen": chosen, "why": why, "validation_samples": len(y),
                    "candidates": {k: asdict(c) for k, c in candidates.items()},
                    "b1_speedup_rounds": [round(r, 4) for r in ratios]}
