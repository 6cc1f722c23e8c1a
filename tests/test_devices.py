"""`slimbench run --devices N --strategy ddp --num-nodes K` reaches Lightning's Trainer (no GPUs needed: the Trainer
is replaced by one that records its arguments); the defaults stay one device, automatic strategy, one node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimbench.baselines import training
from slimbench.baselines.training import Devices, current_devices, set_devices
from slimbench.harness.cli import main


class TrainerCalled(Exception):
    pass


@pytest.fixture
def trainer_kwargs(monkeypatch: pytest.MonkeyPatch):
    seen: list[dict[str, Any]] = []

    def fake_trainer(**kwargs: Any) -> None:
        seen.append(kwargs)
        raise TrainerCalled("stop before training")

    monkeypatch.setattr(training.L, "Trainer", fake_trainer)
    before = current_devices()
    yield seen
    set_devices(before)   # process-wide: later tests train on one device again


def test_defaults_are_one_device(trainer_kwargs: list[dict[str, Any]]):
    assert Devices().trainer_kwargs() == {"devices": 1, "strategy": "auto", "num_nodes": 1}
    set_devices(Devices())
    from slimbench.baselines import build_model
    from slimbench.baselines.classifier import TrainConfig
    from slimbench.tasks import build_task

    task = build_task("digits", {})
    with pytest.raises(TrainerCalled):
        training.fit(build_model("tiny-cnn", task.spec, task.num_classes, {}), task, TrainConfig(epochs=1), seed=0)
    assert {k: trainer_kwargs[0][k] for k in ("devices", "strategy", "num_nodes")} == \
        {"devices": 1, "strategy": "auto", "num_nodes": 1}


def test_cli_flags_reach_the_trainer(trainer_kwargs: list[dict[str, Any]], write_suite, smoke_config: dict,
                                     tmp_path: Path):
    suite = write_suite({**smoke_config, "methods": ["baseline"]})
    code = main(["run", str(suite), "--results", str(tmp_path / "res"), "--wandb", "disabled", "--no-progress",
                 "--allow-dirty", "--devices", "2", "--strategy", "ddp", "--num-nodes", "3"])
    assert code == 1   # the stand-in Trainer stops the cell, which is recorded as failed
    assert trainer_kwargs and all(k["devices"] == 2 and k["strategy"] == "ddp" and k["num_nodes"] == 3
                                  for k in trainer_kwargs)
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "res" / "smoke" / "runs").glob("*.json")]
    assert record["status"] == "failed" and "stop before training" in record["details"]["error"]
    assert record["hardware"]["training_devices"] == {"devices": 2, "strategy": "ddp", "num_nodes": 3}


def test_devices_flag_is_checked(capsys: pytest.CaptureFixture[str], write_suite, smoke_config: dict):
    with pytest.raises(SystemExit):
        main(["run", str(write_suite(smoke_config)), "--devices", "0"])
    assert "positive integer or 'auto'" in capsys.readouterr().err


def test_other_ddp_ranks_do_not_wait_on_rank_zeros_cache_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Rank 0 holds the entry's lock while it trains; rank 1 must join that training, not wait for it to end."""
    import contextlib

    from filelock import FileLock

    from slimbench.baselines.classifier import TrainConfig
    from slimbench.harness.run.cache import ModelCache
    from slimbench.harness.run.suite import Named

    cache, args = ModelCache(tmp_path), (Named("digits", {}), Named("tiny-cnn", {}), TrainConfig(epochs=1), 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("NODE_RANK", raising=False)
    assert isinstance(cache.lock(*args), FileLock)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert isinstance(cache.lock(*args), contextlib.nullcontext)
