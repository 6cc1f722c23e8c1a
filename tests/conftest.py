"""Shared test setup: no network, W&B offline, no progress bars, small deterministic fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["SLIMBENCH_PROGRESS"] = "0"
os.environ.setdefault("SLIMBENCH_ALLOW_DIRTY", "1")   # tests run from working trees; records say so

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

# One intra-op thread: tests use tiny models, where a second thread mostly adds contention (measured up to 10×
# slower on a busy 2-core machine), and the subprocess tests (plugins, packaging) run beside them.
torch.set_num_threads(1)

import pytest  # noqa: E402
import yaml  # noqa: E402

SMOKE = {
    "suite": "smoke",
    "seeds": [0],
    "tasks": [{"name": "digits"}],
    "models": [{"name": "tiny-cnn"}],
    "methods": ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}}],
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
    "finetune": {"epochs": 1, "batch_size": 64, "lr": 0.002},
    "teacher": {"name": "tiny-cnn", "params": {"width": 32}},
    "measure": {"latency_batch": 8, "min_run_time": 0.01, "rounds": 1, "warmup": 1},
}


@pytest.fixture
def smoke_config() -> dict:
    """A fresh copy of a seconds-long suite (digits + tiny-cnn) that tests may modify."""
    return yaml.safe_load(yaml.safe_dump(SMOKE))


@pytest.fixture
def write_suite(tmp_path: Path):
    def _write(config: dict, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return _write


# -- shared helpers for method tests --------------------------------------------------------------------------
from slimbench.baselines.classifier import TrainConfig  # noqa: E402
from slimbench.baselines.training import TrainedModel, fit  # noqa: E402
from slimbench.methods import MethodContext  # noqa: E402
from slimbench.tasks.base import MethodView  # noqa: E402

TEST_FINETUNE = TrainConfig(epochs=1, batch_size=64, lr=0.002, channels_last=False)


def train_tiny(task, model, epochs: int, lr: float = 0.01):  # noqa: ANN001, ANN201
    """A seeded, quick fit of a test model on a test task, returned in eval mode."""
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=lr, channels_last=False)
    return fit(model, task, cfg, seed=0, progress=False).model.eval()


def method_context(task, baseline, fresh=None, finetune=None, on_fit=None) -> MethodContext:  # noqa: ANN001
    """What the harness hands a method, built for a test: the task's method view, a real fine-tune loop."""
    def default_finetune(m, module=None, cfg=None):  # noqa: ANN001, ANN202
        if on_fit is not None:
            on_fit()
        return fit(m, task, cfg or TEST_FINETUNE, seed=0, module=module, progress=False).model

    import copy

    return MethodContext(task=MethodView(task), finetune=finetune or default_finetune,
                         teacher=lambda: TrainedModel(baseline), seed=0, budget=TEST_FINETUNE,
                         train_budget=TEST_FINETUNE, baseline=TrainedModel(baseline),
                         fresh_model=fresh or (lambda: copy.deepcopy(baseline)))
