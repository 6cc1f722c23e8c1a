"""`slimbench bench-fit`: both paths really train the same model on the same batches, and the CLI prints both."""

from __future__ import annotations

import copy

import torch

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.harness.cli import main
from slimbench.harness.measure.fit_overhead import bare_fit, benchmark_fit
from slimbench.tasks import build_task


def test_the_bare_loop_trains_like_fit():
    task = build_task("digits", {})
    torch.manual_seed(0)
    model = build_model("tiny-cnn", task.spec, task.num_classes, {})
    before = copy.deepcopy(model.state_dict())
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, max_train_batches=20, channels_last=False)
    seconds = bare_fit(model, task, cfg)
    assert seconds > 0 and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    x, y = task.val.x, task.val.y
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy > 0.2          # ten classes (chance 0.1): one short one-cycle epoch already doubles it


def test_benchmark_times_each_path_the_same_number_of_times(capsys):
    task = build_task("digits", {})
    cfg = TrainConfig(epochs=1, batch_size=64, max_train_batches=3, channels_last=False)
    result = benchmark_fit(task, "tiny-cnn", cfg, repeats=2)
    assert len(result.lightning_seconds) == len(result.bare_seconds) == 2 and result.ratio > 0
    assert main(["bench-fit", "--task", "digits", "--model", "tiny-cnn", "--batches", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "Lightning fit" in out and "bare PyTorch loop" in out and "overhead:" in out
