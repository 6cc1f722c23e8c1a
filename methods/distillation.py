"""Distillation methods: train the cell's student against the suite's teacher (cached, trained once per task).

The comparison is fair by construction: by default the student starts from the same initialisation as its
student-alone baseline (same seed) and trains with the same budget (`train:`), so only the loss differs.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.distillation import DistillationModule, DistillLoss, FeatureKind, FeaturePair
from slimbench.core.errors import ConfigError
from slimbench.methods.base import Method, MethodContext, Outcome, register_method
from slimbench.tasks.base import MethodView, Task

Init = Literal["scratch", "baseline"]


@torch.no_grad()
def validation_accuracy(model: nn.Module, task: Task | MethodView) -> float:
    """Accuracy on the validation split: what any tuning (T, α) may look at; the test split stays unseen."""
    model.eval()
    acc = MulticlassAccuracy(num_classes=task.num_classes, average="micro")
    for x, y in task.val_dataloader():
        acc.update(model(x), y)
    return float(acc.compute())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def finetune_against(student: nn.Module, teacher: nn.Module, ctx: MethodContext, budget: TrainConfig,
                     loss: DistillLoss) -> tuple[nn.Module, DistillationModule]:
    """`ctx.finetune` with a distillation loss from a frozen `teacher`: the one place a student meets its teacher.

    Used by the distillation methods (the suite's teacher) and by methods that recover from compression against
    the uncompressed model (its own logits as soft targets).
    """
    module = DistillationModule(student, teacher, ctx.task.num_classes, budget, loss,
                                example=ctx.task.example_input(8))
    try:
        return ctx.finetune(student, module=module, cfg=budget), module
    finally:
        module.remove_hooks()


@dataclass
class Distillation(Method):
    """Shared mechanism: pick the student's start and budget, train it in a DistillationModule, report."""

    family: ClassVar[str] = "distillation"
    uses_teacher = True
    alpha: float = 0.9          # weight of the soft-target term
    temperature: float = 4.0
    init: Init = "scratch"      # scratch: fresh init + the `train:` budget; baseline: trained student + `finetune:`

    def __post_init__(self) -> None:
        self.loss()   # bad weights fail when the suite is read, not after the teacher has trained

    @abc.abstractmethod
    def loss(self) -> DistillLoss:
        """The loss weights and feature pairs of this method."""

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        teacher = ctx.teacher()   # first: training it (once, then cached) reseeds the RNG
        if self.init == "scratch":
            torch.manual_seed(ctx.seed)   # the same initialisation as the student-alone baseline of this seed
            student, budget = ctx.fresh_model(), ctx.train_budget
        else:
            student, budget = model, ctx.budget
        student, module = finetune_against(student, teacher.model, ctx, budget, self.loss())
        return Outcome(student, compute="dense", details=self.details(module, teacher.meta, student, budget, ctx))

    def details(self, module: DistillationModule, teacher_meta: dict[str, Any], student: nn.Module,
                budget: TrainConfig, ctx: MethodContext) -> dict[str, Any]:
        loss = module.loss
        return {
            "teacher": {
                "model": teacher_meta.get("model"), "params": parameter_count(module.teacher),
                "test_accuracy": teacher_meta.get("test_accuracy"), "val_acc": teacher_meta.get("val_acc"),
                "selected_epoch": teacher_meta.get("selected_epoch"), "epochs": teacher_meta.get("epochs"),
                "checkpoint_sha256": teacher_meta.get("sha256"),
            },
            "teacher_accuracy": teacher_meta.get("test_accuracy"),
            "student_alone_accuracy": ctx.baseline.meta.get("test_accuracy"),
            "student_alone_val_acc": ctx.baseline.meta.get("val_acc"),
            "val_acc": round(validation_accuracy(student, ctx.task), 6),
            "init": self.init,
            "budget": dataclasses.asdict(budget),
            "loss": {"alpha": loss.alpha, "temperature": loss.temperature, "feature_kind": loss.feature_kind if
                     loss.uses_features else None, "beta": loss.beta,
                     "pairs": [{"student": s.path, "teacher": t.path}
                               for s, t in zip(module.student_taps, module.teacher_taps)]},
            "adapter_params": parameter_count(module.adapters),   # training-only: not in the deployed student
        }


@register_method("distill.logit")
@dataclass
class LogitDistillation(Distillation):
    """Hinton et al. 2015: α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE, from the suite's teacher."""

    def loss(self) -> DistillLoss:
        return DistillLoss(alpha=self.alpha, temperature=self.temperature)


# Defaults for MobileNetV2 students and teachers (module names are the same at every width). Hints: the end of
# the 96-channel stage, about two thirds deep (FitNets guides a middle layer). Attention: the ends of the last
# stages that still have spatial extent at 28-32 px (7×7 and 4×4; later maps are 2×2).
# Weights chosen on validation (fashion-mnist, 4,000-image subset, 5 epochs, MobileNetV2-0.5 from ResNet-18, seed 0;
# student alone 0.7665): hint beta 1 / 10 / 100 -> 0.8005 / 0.8055 / 0.8040; attention beta 100 / 1000 -> 0.7900 /
# 0.7780. RepDistiller's (Tian et al. 2020) attention weight of 1000 assumes larger maps (its loss is a mean over
# positions, so the same beta weighs a 2×2 map 16× more than an 8×8 one).
DEFAULT_LAYERS: dict[str, list[str]] = {"hint": ["features.13"], "attention": ["features.3", "features.6"]}
DEFAULT_BETA: dict[str, float] = {"hint": 10.0, "attention": 100.0}


@register_method("distill.feature")
@dataclass
class FeatureDistillation(Distillation):
    """FitNets hints (learned 1×1 adapter) or attention transfer between modules named by path, plus CE."""

    # the default layers name MobileNetV2's modules
    example: ClassVar[tuple[str, dict[str, Any]]] = ("tiny-cnn", {"kind": "attention", "layers": ["2"]})
    alpha: float = 0.0                      # optional soft-target term on top of the feature term
    kind: FeatureKind = "hint"
    layers: list[str] | None = None         # student module paths; None: DEFAULT_LAYERS[kind]
    teacher_layers: list[str] | None = None  # teacher module paths, one per student path; None: the same paths
    beta: float | None = None               # feature-term weight; None: DEFAULT_BETA[kind]

    def __post_init__(self) -> None:
        layers = self.student_paths
        if not layers:
            raise ConfigError("distill.feature: `layers` must name at least one student module path")
        if self.teacher_layers is not None and len(self.teacher_layers) != len(layers):
            raise ConfigError(f"distill.feature: teacher_layers ({len(self.teacher_layers)}) must pair one-to-one "
                              f"with layers ({len(layers)})")
        super().__post_init__()

    @property
    def student_paths(self) -> list[str]:
        return DEFAULT_LAYERS[self.kind] if self.layers is None else self.layers

    def loss(self) -> DistillLoss:
        students = self.student_paths
        pairs = [FeaturePair(s, t) for s, t in zip(students, self.teacher_layers or students)]
        beta = DEFAULT_BETA[self.kind] if self.beta is None else self.beta
        return DistillLoss(alpha=self.alpha, temperature=self.temperature, feature_kind=self.kind, beta=beta,
                           pairs=pairs)
