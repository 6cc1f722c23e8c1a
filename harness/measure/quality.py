"""Quality of a deployed model on a task's test split: accuracy, macro-F1, per-class and corrupted-input accuracy."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from slimbench.harness.measure.figures import Robustness, unpack_bits
from slimbench.tasks.base import Split, Task, TestSplitAccessError

__all__ = ["MEASURE_VERSION", "Evaluation", "evaluate", "evaluate_test", "pack_bits", "predict", "robustness",
           "unpack_bits"]   # unpack_bits is defined with the record's figures (reports decode without torch)


# Bump when anything that produces a measured figure changes (this module, slimbench.deploy's counting,
# latency, runtimes, packing or ONNX export): every record measured by older code then expires.
MEASURE_VERSION = 2   # 2: corrupted-input accuracy, per-class accuracy and per-example correctness


@torch.inference_mode()
def predict(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted class of every row of `x`, in batches (the deployed runtime's own forward)."""
    return torch.cat([torch.as_tensor(model(x[i:i + batch_size])).argmax(dim=1)
                      for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0, dtype=torch.long)


@dataclass
class Evaluation:
    accuracy: float
    macro_f1: float
    predictions: torch.Tensor       # one class per test example, in test-split order


def _test_split(task: Task) -> Split:
    """The test split, which the harness's task holds and the copy methods are handed does not."""
    if task.test is None:
        raise TestSplitAccessError(f"task {task.name!r} holds no test split: measure on the harness's task, not on "
                                   f"the copy methods are handed")
    return task.test


def evaluate_test(model: Callable[[torch.Tensor], torch.Tensor], task: Task) -> Evaluation:
    """Accuracy and macro-F1 on the test split (torchmetrics), with the predictions behind them."""
    if isinstance(model, nn.Module):
        model.eval()
    test = _test_split(task)
    preds = predict(model, test.x)
    acc = MulticlassAccuracy(num_classes=task.num_classes, average="micro")(preds, test.y)
    f1 = MulticlassF1Score(num_classes=task.num_classes, average="macro")(preds, test.y)
    return Evaluation(float(acc), float(f1), preds)


def evaluate(model: nn.Module, task: Task) -> tuple[float, float]:
    """Accuracy and macro-F1 on the test split."""
    e = evaluate_test(model, task)
    return e.accuracy, e.macro_f1


def pack_bits(flags: torch.Tensor) -> str:
    """Per-example right/wrong flags as base64 bits: 10k test examples cost 1.7 kB in a record."""
    return base64.b64encode(np.packbits(flags.numpy().astype(bool)).tobytes()).decode()


CORRUPTION_SEED = 0   # one set of corrupted inputs per task: every cell and its baseline see the same examples


def robustness(model: Callable[[torch.Tensor], torch.Tensor], task: Task, predictions: torch.Tensor,
               examples: int) -> Robustness:
    """Per-class accuracy on the clean test split, accuracy on each corrupted copy, and which examples are right.

    Everything a report needs to pair this model with its baseline example by example (compression-identified
    examples, the worst-hit class) without keeping either model.
    """
    y, classes = _test_split(task).y, task.num_classes
    correct = predictions == y
    counts = torch.bincount(y, minlength=classes)
    hits = torch.bincount(y[correct], minlength=classes)
    out = Robustness(classes=list(task.class_names), class_counts=counts.tolist(),
                     per_class_accuracy=[round(float(h) / int(c), 6) if c else None for h, c in zip(hits, counts)],
                     test_correct=pack_bits(correct), test_examples=len(y))
    names = task.corruption_names()
    if not names or task.corruptions is None:   # names come from the corruption source
        return out
    for name in names:
        corruption = task.corruptions.get(name)
        out.corruption_levels[name] = list(corruption.levels)
        out.corrupted_accuracy[name] = {}
        for severity in range(1, len(corruption.levels) + 1):
            split = task.corrupted_test(name, severity, examples, CORRUPTION_SEED)
            out.corrupted_accuracy[name][str(severity)] = round(
                float((predict(model, split.x) == split.y).float().mean()), 6)
    index = task.corrupted_index(examples, CORRUPTION_SEED)
    out.corrupted_examples, out.corruption_seed = len(index), CORRUPTION_SEED
    out.clean_subset_accuracy = round(float(correct[index].float().mean()), 6)
    return out
