"""Quality of a deployed model on a task's test split, and the metrics record of a cell."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from slimbench.tasks.base import Task


# Bump when anything that produces a measured figure changes (this module, slimbench.deploy's counting,
# latency, runtimes, packing or ONNX export): every record measured by older code then expires.
MEASURE_VERSION = 1


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
    runtime: str = "eager"           # where the model is deployed; `latency_b*_ms` are that runtime's
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)   # every runtime's timings
    speedup: dict[str, dict[str, Any]] = field(default_factory=dict)   # per runtime and batch: ratio + noise band

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


