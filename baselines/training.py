"""Fit a model on a task with Lightning and keep the epoch with the best validation accuracy."""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from slimbench.baselines.classifier import ClassifierModule, TrainConfig
from slimbench.tasks.base import Task

warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# Bump when the training loop's behaviour changes: cached baselines and every cell trained by it expire.
TRAINING_VERSION = 1


@dataclass(frozen=True)
class Devices:
    """How Lightning spreads one fit (`slimbench run --devices N --strategy ddp --num-nodes K`). Process-wide and,
    not part of any run_id or cache key: it says how a long cell trains, not which cell it is. With ddp each
    device takes a full batch, so the effective batch (and the numbers) can differ from a one-device run."""

    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"devices": self.devices, "strategy": self.strategy, "num_nodes": self.num_nodes}


_DEVICES = Devices()


def set_devices(devices: Devices) -> None:
    """Every later fit in this process uses `devices` (the CLI sets it once; Ray workers from the driver's)."""
    global _DEVICES
    _DEVICES = devices


def current_devices() -> Devices:
    return _DEVICES


@dataclass
class FitResult:
    model: nn.Module
    selected_epoch: int            # 0-based epoch whose weights are returned (best validation accuracy)
    val_acc: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)   # training alone, per epoch (EpochTimer)
    train_batches: int = 0         # batches per training epoch (the budget's cap, or the whole split)


@dataclass
class TrainedModel:
    """A trained model plus what is known about its training (epochs, selected epoch, test accuracy, checkpoint)."""

    model: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)


class FitData(L.LightningDataModule):
    """A task's splits at one fit's batch size: cells share one cached Task, so a fit never changes it."""

    def __init__(self, task: Task, batch_size: int):
        super().__init__()
        self.task, self.batch_size = task, batch_size

    def train_dataloader(self) -> Any:
        return self.task.train_dataloader(self.batch_size)

    def val_dataloader(self) -> Any:
        return self.task.val_dataloader()


class KeepBestWeights(Callback):
    """Remember the best-validation weights in memory.

    Lightning's ModelCheckpoint writes a file per improvement; we only need the state to hand back, and our
    cache stores its own `weights_only` checkpoint, so an in-memory copy is simpler and leaves no files.
    """

    def __init__(self) -> None:
        self.best_acc, self.best_epoch = -1.0, -1
        self.best_state: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()
                   if k in ("val_acc", "val_loss", "train_loss_epoch")}
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        acc = metrics.get("val_acc", -1.0)
        if acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, trainer.current_epoch
            # ClassifierModule.model; torch types a module's attributes Tensor | Module
            self.best_state = copy.deepcopy(pl_module.model.state_dict())  # type: ignore[union-attr]


class EpochTimer(Callback):
    """Wall seconds of each training epoch, validation left out: it costs the same for every model of a task, so it
    would only dilute what the model's size does to training time."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = self._validation_start = self._validation = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._validation = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation += time.perf_counter() - self._validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(round(time.perf_counter() - self._start - self._validation, 3))


def fit(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    *,
    seed: int,
    logger: Any = False,
    module: ClassifierModule | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train `model` (in place) for `cfg.epochs`; return it loaded with its best-validation weights."""
    L.seed_everything(seed, workers=True, verbose=False)
    module = module or ClassifierModule(model, task.num_classes, cfg)
    keep, timer = KeepBestWeights(), EpochTimer()
    if progress is None:  # bars on a terminal, quiet in logs; SLIMBENCH_PROGRESS=0/1 forces either
        progress = os.environ.get("SLIMBENCH_PROGRESS", "1" if sys.stderr.isatty() else "0") != "0"
    model.train()
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator="auto",
        **_DEVICES.trainer_kwargs(),
        logger=logger,
        callbacks=[keep, timer],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        limit_train_batches=cfg.max_train_batches or 1.0,
        deterministic="warn",
        log_every_n_steps=10,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=FitData(task, cfg.batch_size))
    model = module.model.cpu()
    if keep.best_state is not None:
        model.load_state_dict(keep.best_state)
    model.eval()
    return FitResult(model, keep.best_epoch, keep.best_acc, keep.history, time.perf_counter() - start,
                     timer.seconds, int(trainer.num_training_batches))


torch.set_float32_matmul_precision("high")
