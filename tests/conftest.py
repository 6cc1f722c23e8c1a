"""Shared test setup: no network, W&B offline, no progress bars, small deterministic fixtures.

Tests of about ten seconds or more are marked `slow`, so that `pytest -m "not slow"` (`./reproduce.sh test -m
'not slow'`) is a quick loop while `./reproduce.sh test`, which CI runs, runs them all. The slow set:
- test_plugins, test_replication_verdicts (whole modules): each plugin test installs or imports a plugin in a fresh
  process; every verdict is judged on records of a tiny two-seed suite that runs first.
- test_kernel_pins: the three pinned and native runs and the tests that read them, eager latency timed in a child
  process, gradients under qemu on other CPUs.
- test_int8_reference: ONNX Runtime on a CPU emulated by qemu.
- test_contracts: the suite of every method that the record contract is checked on, every model trained once.
- test_shards: shards as concurrent processes, and a shard killed mid-suite.
- test_ray_executor: suites on a local Ray cluster.
- test_packaging: the installed wheel run from another directory; test_layering: every room imported in a fresh
  process.
- test_pruning: MACs targets planned on MobileNetV2 by bisection (a global ranking, inside blocks alone).
- test_text_models: every backbone trained on a synthetic text task.
- test_static_checks: mypy over the whole package (the ruff check takes a second and is not slow).
- test_site_figures: the committed site rebuilt from every record, to compare.
- test_site_browser (whole module): the site built by `slimbench site` in a subprocess (replication included),
  then driven in headless Chromium.
A new test joins them when `--durations` shows it at ten seconds or more, or when it uses a fixture that is.
"""

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

# One intra-op thread: tests use tiny models, where a second thread mostly adds contention with other processes,
# and the subprocess tests (plugins, packaging) run beside them.
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
from slimbench.baselines import build_model  # noqa: E402
from slimbench.baselines.classifier import TrainConfig  # noqa: E402
from slimbench.baselines.training import TrainedModel, fit  # noqa: E402
from slimbench.methods import MethodContext  # noqa: E402
from slimbench.tasks import build_task  # noqa: E402
from slimbench.tasks.base import MethodView  # noqa: E402

TEST_FINETUNE = TrainConfig(epochs=1, batch_size=64, lr=0.002, channels_last=False)


def train_tiny(task, model, epochs: int, lr: float = 0.01):  # noqa: ANN001, ANN201
    """A seeded, quick fit of a test model on a test task, returned in eval mode. `model` may be a function that
    builds it, so that the seed fixes its initial weights too."""
    torch.manual_seed(0)
    if not isinstance(model, torch.nn.Module):
        model = model()
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


@pytest.fixture(scope="module")
def task():  # noqa: ANN201
    """digits, built afresh for each module, so that no module sees what another did to it."""
    return build_task("digits")


@pytest.fixture(scope="module")
def trained(request, task):  # noqa: ANN001, ANN201
    """tiny-cnn trained on digits once per module, at the size its module names in `TRAINED` (width, epochs):
    the method tests need models of different sizes, e.g. wide enough for codebooks or scales to pay off."""
    size = request.module.TRAINED
    return train_tiny(task, lambda: build_model("tiny-cnn", task.spec, task.num_classes, {"width": size["width"]}),
                      epochs=size["epochs"])
