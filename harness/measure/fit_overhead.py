"""`slimbench bench-fit`: what Lightning costs. The harness's own `fit` against a bare PyTorch loop doing the same
work (same model init, data loader, batches, optimizer and one-cycle schedule, loss, channels-last layout and one
validation pass), timed in the same process, alternating the two so drift hits both alike.

Written by hand because the question is about our training path itself: no library times it against its own
absence."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import fit
from slimbench.tasks.base import Task


@dataclass
class FitBenchmark:
    task: str
    model: str
    batches: int
    batch_size: int
    lightning_seconds: list[float]
    bare_seconds: list[float]

    @property
    def ratio(self) -> float:
        """Median Lightning time over median bare time (1.00 = no overhead)."""
        return statistics.median(self.lightning_seconds) / statistics.median(self.bare_seconds)

    def text(self) -> str:
        lit, bare = statistics.median(self.lightning_seconds), statistics.median(self.bare_seconds)
        return (f"{self.model} on {self.task}: {self.batches} training batches of {self.batch_size} + one validation "
                f"pass, {len(self.bare_seconds)} repeats each, alternating\n"
                f"  Lightning fit (the harness's): median {lit:.2f} s  "
                f"({', '.join(f'{s:.2f}' for s in self.lightning_seconds)})\n"
                f"  bare PyTorch loop:             median {bare:.2f} s  "
                f"({', '.join(f'{s:.2f}' for s in self.bare_seconds)})\n"
                f"  overhead: {self.ratio:.3f}× (goal ≤ 1.10×)")


def bare_fit(model: nn.Module, task: Task, cfg: TrainConfig) -> float:
    """The same training work as `fit` for one epoch of `cfg.max_train_batches`, without Lightning; seconds."""
    start = time.perf_counter()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.max_train_batches or len(task.train_dataloader(cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 8), pct_start=0.25)
    model.train()
    for i, (x, y) in enumerate(task.train_dataloader(cfg.batch_size)):
        if i >= steps:
            break
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in task.val_dataloader():
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return time.perf_counter() - start


def benchmark_fit(task: Task, model_name: str, cfg: TrainConfig, repeats: int = 3, seed: int = 0) -> FitBenchmark:
    """Both paths from the same initial weights, `repeats` times each, Lightning and bare alternating."""
    torch.manual_seed(seed)
    initial = build_model(model_name, task.spec, task.num_classes, {})
    cfg = replace(cfg, epochs=1)
    lightning, bare = [], []
    for r in range(repeats):
        for which in (("lightning", "bare") if r % 2 == 0 else ("bare", "lightning")):
            model = copy.deepcopy(initial)
            if which == "lightning":
                start = time.perf_counter()
                fit(model, task, cfg, seed=seed, progress=False)
                lightning.append(time.perf_counter() - start)
            else:
                torch.manual_seed(seed)
                bare.append(bare_fit(model, task, cfg))
    return FitBenchmark(task.name, model_name, cfg.max_train_batches or 0, cfg.batch_size, lightning, bare)
