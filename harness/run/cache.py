"""Trained-baseline cache: each (task, model, seed, training budget) is trained once and reused."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from slimbench.baselines import MODELS, build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import TRAINING_VERSION, TrainedModel, fit
from slimbench.core import kernels
from slimbench.core.errors import CheckpointError
from slimbench.harness.measure.quality import evaluate
from slimbench.harness.run.records import atomic_write_bytes
from slimbench.harness.run.suite import Named, config_hash, entry_version
from slimbench.tasks import TASKS
from slimbench.tasks.base import Task

log = logging.getLogger("slimbench")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def key(self, task: Named, model: Named, train: TrainConfig, seed: int) -> str:
        """Everything that decides the trained weights, versions of the code included (results expire)."""
        versions = {"task": entry_version(TASKS, task.name), "model": entry_version(MODELS, model.name),
                    "training": TRAINING_VERSION}
        key = {"task": task.to_dict(), "model": model.to_dict(), "train": asdict(train), "seed": seed,
               "versions": versions}
        numerics = kernels.current()
        if numerics.pinned:   # other kernels train other weights: a model trained under other pins is not this one
            key["kernels"] = {"numerics": numerics.numerics, "pins": numerics.pins}
        return config_hash(key)

    def path(self, task: Named, model: Named, train: TrainConfig, seed: int) -> Path:
        safe = model.name.replace("/", "_")
        return self.root / f"{task.name}__{safe}__s{seed}__{self.key(task, model, train, seed)}.pt"

    def lock(self, task: Named, model: Named, train: TrainConfig, seed: int) -> FileLock | contextlib.nullcontext:
        """One trainer per entry across processes: the second waits, then finds the entry written.

        Not for the other ranks of one multi-device fit (`--strategy ddp`: Lightning starts the same command once
        per device): they must join rank 0's training, which holds the lock, rather than wait for it to end.
        """
        path = self.path(task, model, train, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        if any(int(os.environ.get(v, "0") or 0) > 0 for v in ("LOCAL_RANK", "NODE_RANK")):
            return contextlib.nullcontext()
        return FileLock(str(path) + ".lock")

    def load(self, task: Task, task_cfg: Named, model_cfg: Named, train: TrainConfig, seed: int
             ) -> TrainedModel | None:
        """The cached model for this budget, or None when it has not been trained yet."""
        path = self.path(task_cfg, model_cfg, train, seed)
        return self._load(path, task, model_cfg) if path.exists() else None

    def train(
        self, task: Task, task_cfg: Named, model_cfg: Named, train: TrainConfig, seed: int,
        logger_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> TrainedModel:
        """Train, evaluate on test and cache (atomic write) a model for this budget."""
        path = self.path(task_cfg, model_cfg, train, seed)
        log.info("training %s on %s (seed %d, %d epochs) -> %s", model_cfg.name, task.name, seed, train.epochs,
                 path.name)
        torch.manual_seed(seed)
        model = build_model(model_cfg.name, task.spec, task.num_classes, model_cfg.params)
        result = fit(model, task, train, seed=seed,
                     logger=logger_factory(model_cfg.to_dict()) if logger_factory else False)
        accuracy, macro_f1 = evaluate(result.model, task)
        meta = {
            "task": task_cfg.to_dict(), "model": model_cfg.to_dict(), "train": asdict(train), "seed": seed,
            "selected_epoch": result.selected_epoch, "epochs": train.epochs, "val_acc": result.val_acc,
            "test_accuracy": accuracy, "test_macro_f1": macro_f1, "train_seconds": round(result.seconds, 2),
            "history": result.history, "epoch_seconds": result.epoch_seconds, "train_batches": result.train_batches,
        }
        buf = io.BytesIO()
        torch.save({"state_dict": result.model.state_dict(), "meta_json": json.dumps(meta)}, buf)
        atomic_write_bytes(path, buf.getvalue())
        return TrainedModel(result.model, {**meta, "checkpoint": str(path), "sha256": sha256_file(path)})

    def _load(self, path: Path, task: Task, model_cfg: Named) -> TrainedModel:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(payload["meta_json"])
            model = build_model(model_cfg.name, task.spec, task.num_classes, model_cfg.params)
            model.load_state_dict(payload["state_dict"])
        except Exception as exc:
            raise CheckpointError(
                f"cached checkpoint {path} is corrupt or does not match {model_cfg.name} on {task.name} "
                f"({exc.__class__.__name__}: {str(exc)[:200]}); delete it to retrain"
            ) from None
        model.eval()
        return TrainedModel(model, {**meta, "checkpoint": str(path), "sha256": sha256_file(path)})
