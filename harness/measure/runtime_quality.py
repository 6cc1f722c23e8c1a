"""The deployed model in every other runtime a suite lists: its test accuracy there, the runtime's own file and what
really ran.

A runtime can change a model's numbers (OpenVINO's default bf16 on CPUs that have it, a runtime's own int8
kernels), so accuracy is evaluated in each, beside the agreement of its predictions with those of the runtime the
model is deployed in. A runtime that cannot take the model says why, and the record keeps the reason.
"""

from __future__ import annotations

import torch
from torch import nn

from slimbench.core.errors import NotApplicableError
from slimbench.deploy.runtimes import deploy, get_runtime
from slimbench.harness.measure.figures import RuntimeQuality
from slimbench.harness.measure.quality import Evaluation, evaluate_test
from slimbench.tasks.base import Task


def quality_by_runtime(model: nn.Module, runtimes: tuple[str, ...], deployed_in: str, deployed: nn.Module,
                       evaluation: Evaluation, task: Task, example: torch.Tensor) -> dict[str, RuntimeQuality]:
    """`{runtime: RuntimeQuality}` for each runtime in `runtimes` and the one the model is deployed in (`deployed`,
    already evaluated as `evaluation`: not evaluated twice)."""
    out: dict[str, RuntimeQuality] = {}
    for name in dict.fromkeys((deployed_in, *runtimes)):
        runtime = get_runtime(name)
        if name == deployed_in:
            in_runtime, result = deployed, evaluation
        else:
            try:
                in_runtime = deploy(model, name, example, threads=None)
            except NotApplicableError as exc:
                out[name] = RuntimeQuality(unavailable=str(exc))
                continue
            result = evaluate_test(in_runtime, task)
        out[name] = RuntimeQuality(
            accuracy=result.accuracy, macro_f1=result.macro_f1,
            agreement=round(float((result.predictions == evaluation.predictions).float().mean()), 6),
            file_bytes=runtime.file_bytes(in_runtime), ran=runtime.describe(in_runtime))
    return out
