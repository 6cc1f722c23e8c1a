"""Past one process: shards own disjoint, stable slices of a suite; processes racing on one results folder run
every cell exactly once and train every cached baseline once; a killed shard's suite completes on rerun."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slimbench.core.errors import ConfigError
from slimbench.harness.run.plan import make_plan
from slimbench.harness.run.shards import in_shard, parse_shard
from slimbench.harness.run.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
DETERMINISTIC = ["task", "model", "method", "params_json", "seeds", "accuracy", "macro_f1", "params",
                 "nonzero_params", "macs", "delta_accuracy"]


@pytest.fixture
def six_cells(smoke_config, tmp_path: Path) -> Path:
    smoke_config["methods"] = ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}},
                               {"name": "prune.random", "params": {"sparsity": 0.5}}]
    smoke_config["seeds"] = [0, 1]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    return path


def _slimbench(*args: str, results: Path) -> subprocess.Popen:
    env = {**os.environ, "SLIMBENCH_ALLOW_DIRTY": "1", "SLIMBENCH_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "slimbench", "run", *args, "--results", str(results),
                             "--wandb", "disabled", "--no-progress", "--allow-dirty"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _deterministic_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: row[k] for k in DETERMINISTIC} for row in csv.DictReader(fh)]


def test_shards_partition_the_cells_by_run_id(six_cells: Path):
    cells = load_suite(six_cells).cells
    owners = [[i for i in range(3) if in_shard(c.run_id, i, 3)] for c in cells]
    assert all(len(o) == 1 for o in owners)                          # each cell in exactly one shard
    assert owners == [[i for i in range(3) if in_shard(c.run_id, i, 3)] for c in reversed(cells)][::-1]
    assert parse_shard("2/8") == (2, 8)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


@pytest.mark.slow
def test_two_shards_at_once_run_every_cell_once_and_train_each_baseline_once(six_cells: Path, tmp_path: Path):
    results = tmp_path / "results"
    procs = [_slimbench(str(six_cells), "--shard", f"{i}/2", results=results) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    runs = sorted((results / "smoke" / "runs").glob("*.json"))
    assert len(runs) == 6
    trained = "".join(logs).count("INFO slimbench: training tiny-cnn on digits")
    assert trained == 2, logs                                          # seeds 0 and 1, once each, across both shards
    done = [int(m.group(1)) for log in logs for m in re.finditer(r"suite smoke: (\d+) run, ", log)]
    assert sum(done) == 6
    assert re.search(r"suite smoke: cell \d+/\d+ \(\d+ done, 0 failed, \d+ skipped\), about \d+ min left at most",
                     "".join(logs))
    assert not list((results / ".cache" / "models").glob("*.tmp"))   # no half-written cache entry
    third = _slimbench(str(six_cells), results=results)
    out = third.communicate(timeout=600)[0]
    assert third.returncode == 0 and "0 run, 6 already done" in out, out
    plan = make_plan(load_suite(six_cells), results / "smoke" / "runs")
    assert (len(plan.done), len(plan.pending), len(plan.failed)) == (6, 0, 0)


@pytest.mark.slow
def test_a_shard_killed_mid_suite_completes_on_rerun_with_the_same_leaderboard(six_cells: Path, tmp_path: Path):
    serial = tmp_path / "serial"
    assert _slimbench(str(six_cells), results=serial).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    proc = _slimbench(str(six_cells), "--shard", "0/1", results=killed)
    runs = killed / "smoke" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(runs.glob("*.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(list(runs.glob("*.json"))) < 6
    plan = make_plan(load_suite(six_cells), runs)
    assert plan.pending and plan.estimate_seconds is not None and plan.estimate_seconds > 0
    assert _slimbench(str(six_cells), results=killed).wait(timeout=600) == 0
    assert len(list(runs.glob("*.json"))) == 6
    assert _deterministic_rows(killed / "smoke" / "leaderboard.csv") == \
        _deterministic_rows(serial / "smoke" / "leaderboard.csv")
