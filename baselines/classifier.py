"""The Lightning module that trains every baseline (and, subclassed, every fine-tune and distillation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from slimbench.core.params import bounded


@dataclass
class TrainConfig:
    """A training budget from the suite file (`train:` for baselines, `finetune:` for methods)."""

    epochs: int = bounded(3, ge=1)
    batch_size: int = bounded(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = bounded(3e-3, gt=0)
    weight_decay: float = bounded(1e-4, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = bounded(0.0, ge=0, lt=1)
    max_train_batches: int | None = bounded(None, ge=1)  # batches per epoch, drawn afresh from the whole split
    channels_last: bool = True            # NHWC: the layout CPU kernels train depthwise convs fastest in


class ClassifierModule(L.LightningModule):
    """Cross-entropy classification; subclasses override `training_loss` (e.g. distillation)."""

    def __init__(self, model: nn.Module, num_classes: int, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):  # noqa: ANN201
        x, y = batch
        if self.cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def on_fit_start(self) -> None:
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        self.model.to(memory_format=torch.contiguous_format)  # measured and stored in the standard layout

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y, label_smoothing=self.cfg.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(*batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.val_acc.update(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val_acc", self.val_acc, prog_bar=True, on_epoch=True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):  # noqa: ANN201  (Lightning's own return type)
        cfg, params = self.cfg, self.trainable_parameters()
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                  nesterov=True)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.schedule == "constant":
            return opt
        steps = int(self.trainer.estimated_stepping_batches)
        if cfg.schedule == "onecycle":
            # one-cycle needs ≥ 1 step per phase: a budget of a few batches runs the first steps of an 8-step cycle
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 8), pct_start=0.25)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
