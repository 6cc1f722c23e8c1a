"""`--executor ray`: a real local Ray instance with 2 worker CPUs runs an eight-cell suite; every cell runs exactly
once, the baselines and the distillation teachers are trained once in the first stage, and the records equal a
serial run's in everything but timings; failed and crashed cells on workers get failed records."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from slimbench.core.errors import SlimbenchError
from slimbench.harness.run.executors import RayExecutor, SerialExecutor, make_executor
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import load_suite

ray = pytest.importorskip("ray")

# Where two runs of the same code on the same data may differ: wall times, latency and what is derived from it,
# when and where the record was written, and where the (different) model caches live. The baseline checkpoint's
# sha256 differs too: the checkpoint file stores its own training seconds beside the weights.
VOLATILE_SECTIONS = {"wall_seconds", "wandb", "hardware"}
VOLATILE_KEY_PARTS = ("latency", "seconds", "speedup", "_ms", "checkpoint", "created")


def _content(value: Any) -> Any:
    """A record without its volatile fields, recursively."""
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if not any(p in k for p in VOLATILE_KEY_PARTS)}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


def _raw(runs: Path) -> dict[str, dict[str, Any]]:
    return {(data := json.loads(p.read_text()))["run_id"]: data for p in sorted(runs.glob("*.json"))}


def _records(runs: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for run_id, data in _raw(runs).items():
        (data["baseline_training"] or {}).pop("sha256", None)
        out[run_id] = _content({k: v for k, v in data.items() if k not in VOLATILE_SECTIONS})
    return out


@pytest.fixture
def six_cells(smoke_config, tmp_path: Path) -> Path:
    smoke_config["methods"] = ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}},
                               {"name": "prune.random", "params": {"sparsity": 0.5}}, "distill.logit"]
    smoke_config["seeds"] = [0, 1]
    smoke_config["resources"] = {"cpus": 1, "gpus": 0, "memory_gb": 1}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    return path


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_runs_every_cell_once_with_the_serial_records(six_cells: Path, tmp_path: Path, local_ray: None):
    suite = load_suite(six_cells)
    run_ids = sorted(c.run_id for c in suite.cells)
    assert len(run_ids) == 8
    serial = SuiteRunner(suite, tmp_path / "serial", wandb_mode="disabled", progress=False)
    out_serial = serial.run(executor=SerialExecutor())
    assert sorted(out_serial.done) == run_ids and not out_serial.failed

    distributed = SuiteRunner(suite, tmp_path / "ray", wandb_mode="disabled", progress=False)
    start = time.perf_counter()
    out_ray = distributed.run(executor=RayExecutor())   # Ray is already up: the executor joins it, leaves it up
    seconds = time.perf_counter() - start
    assert ray.is_initialized()
    assert sorted(out_ray.done) == run_ids, out_ray          # every cell, each exactly once
    assert not out_ray.failed and not out_ray.skipped
    cache = tmp_path / "ray" / ".cache" / "models"
    trained = sorted(p.name.split("__")[1:3] for p in cache.glob("*.pt"))   # stage 1: baselines and teachers
    assert trained == [["tiny-cnn", "s0"], ["tiny-cnn", "s0"], ["tiny-cnn", "s1"], ["tiny-cnn", "s1"]], trained
    assert not list(cache.glob("*.tmp"))
    records = _records(distributed.paths.runs)
    assert sorted(records) == run_ids
    by_seed = {}
    for rec in _raw(distributed.paths.runs).values():   # every cell of a seed used the baseline stage 1 trained
        by_seed.setdefault(rec["seed"], set()).add(rec["baseline_training"]["sha256"])
    assert all(len(shas) == 1 for shas in by_seed.values()), by_seed
    expected = _records(serial.paths.runs)
    for run_id in run_ids:
        assert records[run_id] == expected[run_id], run_id
        assert records[run_id]["status"] == "ok"
    for rec in records.values():   # the figures the leaderboards are built from, named for the reader
        exp = expected[rec["run_id"]]
        for key in ("accuracy", "macro_f1", "stored_bytes", "nonzero_params", "params", "macs"):
            assert rec["metrics"][key] == exp["metrics"][key]
        labels = [(r["compression"]["baseline"], r["compression"]["evidence"]["storage"]["label"],
                   r["compression"]["evidence"]["compute"]["label"]) for r in (rec, exp)]
        assert labels[0] == labels[1]
    print(f"ray run of 8 cells: {seconds:.1f} s")

    again = distributed.run(executor=RayExecutor())            # a rerun finds nothing to do
    assert sorted(again.skipped) == run_ids and not again.done and not again.failed


BROKEN_PLUGIN = '''
import os
from dataclasses import dataclass
from typing import ClassVar

from slimbench.methods import Method, MethodContext, Outcome, register_method


@dataclass
class Broken(Method):
    """A method that never trains; its subclasses fail in the two ways a worker must survive."""

    family: ClassVar[str] = "pruning"
    uses_finetune: ClassVar[bool] = False


@register_method("raytest.raises")
@dataclass
class Raises(Broken):
    """Fails inside apply, as a buggy method would."""

    def apply(self, model, ctx: MethodContext) -> Outcome:
        raise RuntimeError("deliberately broken method")


@register_method("raytest.dies")
@dataclass
class Dies(Broken):
    """Kills its process, as the out-of-memory killer would."""

    def apply(self, model, ctx: MethodContext) -> Outcome:
        os._exit(1)
'''


@pytest.mark.slow
def test_failed_and_crashed_cells_on_workers_get_failed_records(six_cells: Path, tmp_path: Path, local_ray: None):
    (six_cells.parent / "broken.py").write_text(BROKEN_PLUGIN)
    config = yaml.safe_load(six_cells.read_text())
    config.update(imports=["broken.py"], seeds=[0], methods=["baseline", "raytest.raises", "raytest.dies"])
    six_cells.write_text(yaml.safe_dump(config))
    suite = load_suite(six_cells)   # the workers import the plugin from the suite file too
    label = {c.method.name: c.label for c in suite.cells}
    serial = SuiteRunner(suite, tmp_path / "serial", wandb_mode="disabled", progress=False).run(
        only="*/raytest.raises/*", executor=SerialExecutor())
    distributed = SuiteRunner(suite, tmp_path / "ray", wandb_mode="disabled", progress=False)
    out = distributed.run(executor=RayExecutor())
    assert len(out.done) == 1 and set(out.failed) == {label["raytest.raises"], label["raytest.dies"]}, out
    assert out.failed[label["raytest.raises"]] == serial.failed[label["raytest.raises"]] \
        == "RuntimeError: deliberately broken method"
    assert out.failed[label["raytest.dies"]].startswith("Ray task failed: ")
    records = _raw(distributed.paths.runs)
    assert sorted(r["status"] for r in records.values()) == ["failed", "failed", "ok"]
    assert {r["details"]["error"] for r in records.values() if r["status"] == "failed"} == set(out.failed.values())
    again = distributed.run(executor=RayExecutor(), only="*/baseline/*")   # ok cells are done, failed ones retried
    assert len(again.skipped) == 1 and not again.done


def test_executor_choice_is_checked():
    assert isinstance(make_executor("serial"), SerialExecutor)
    assert isinstance(make_executor("ray", address="auto"), RayExecutor)
    with pytest.raises(SlimbenchError, match="--executor ray"):
        make_executor("serial", address="auto")
    with pytest.raises(SlimbenchError, match="valid executors: serial, ray"):
        make_executor("dask")


def _two_seed_cells(config: dict, tmp_path: Path, methods: list) -> tuple[list, dict, dict[int, Path], Path]:
    """The smoke suite's cells for `methods` at seeds 0 and 1, by label, with cache paths for two baselines and a
    teacher (what the Dispatch tests hand out)."""
    config["methods"], config["seeds"] = methods, [0, 1]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(config))
    cells = load_suite(path).cells
    return cells, {c.label: c for c in cells}, {s: tmp_path / f"base{s}.pt" for s in (0, 1)}, tmp_path / "teacher0.pt"


def test_dispatch_hands_out_baselines_then_teachers_then_cells_whose_models_are_trained(smoke_config, tmp_path):
    """Ray takes queued tasks in no fixed order, so the executor submits only as workers free up, in this order."""
    from slimbench.harness.run.executors import Dispatch

    cells, by, base, teacher = _two_seed_cells(smoke_config, tmp_path, [
        "baseline", {"name": "distill.logit", "params": {"init": "baseline"}}, "quant.fp16"])
    trains = {teacher: (by["digits/tiny-cnn/distill.logit[init=baseline]/s0"], "teacher"),
              base[0]: (by["digits/tiny-cnn/baseline/s0"], "baseline"),
              base[1]: (by["digits/tiny-cnn/baseline/s1"], "baseline")}
    needs = {c.run_id: {base[c.seed]} | ({teacher} if "distill" in c.label and c.seed == 0 else set()) for c in cells}
    needs[by["digits/tiny-cnn/quant.fp16/s1"].run_id] = set()    # its baseline is cached already
    queue = Dispatch(trains, cells, needs)
    assert [queue.next(), queue.next(), queue.next()] == [("train", base[0]), ("train", base[1]),
                                                         ("train", teacher)]   # baselines first, then the teacher
    assert queue.next() == ("cell", by["digits/tiny-cnn/quant.fp16/s1"])    # the only cell with nothing to wait on
    assert queue.next() is None and queue                                   # the rest wait on training
    queue.trained(base[0])
    assert [queue.next()[1].label for _ in range(2)] == ["digits/tiny-cnn/baseline/s0", "digits/tiny-cnn/quant.fp16/s0"]
    assert queue.next() is None        # seed 0's distillation still waits on its teacher
    queue.trained(teacher)
    queue.trained(base[1])
    labels = []
    while (item := queue.next()) is not None:
        labels.append(item[1].label)
    rest = {"digits/tiny-cnn/baseline/s1", "digits/tiny-cnn/distill.logit[init=baseline]/s0",
            "digits/tiny-cnn/distill.logit[init=baseline]/s1"}
    assert labels == [c.label for c in cells if c.label in rest]   # in the suite's order
    assert not queue


def test_dispatch_starts_the_longest_known_work_first(smoke_config, tmp_path):
    """Longest-processing-time first, from finished records' wall times: the longest baseline trains first and the
    longest ready cell starts first, so short cells fill the gaps at the end; work nothing resembles keeps its order."""
    from slimbench.harness.run.executors import Dispatch
    from slimbench.harness.run.plan import WallTimes

    cells, by, base, teacher = _two_seed_cells(smoke_config, tmp_path, [
        "baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}}, "quant.fp16",
        {"name": "distill.logit", "params": {"init": "baseline"}}])
    trains = {base[0]: (by["digits/tiny-cnn/baseline/s0"], "baseline"), teacher: (cells[0], "teacher"),
              base[1]: (by["digits/tiny-cnn/baseline/s1"], "baseline")}
    times = WallTimes()
    times.training.update({base[0].name: 10.0, base[1].name: 50.0, teacher.name: 99.0})
    kd0 = by["digits/tiny-cnn/distill.logit[init=baseline]/s0"]
    times.cell[kd0.run_id] = 300.0                                        # this very cell ran before: 300 s
    times.by_kind["tiny-cnn", "distill.logit"] += [300.0]
    times.by_kind["tiny-cnn", "prune.magnitude"] += [40.0, 60.0]          # cells of its kind: 50 s
    times.by_kind["tiny-cnn", "quant.fp16"] += [5.0]
    times.by_kind["tiny-cnn", "baseline"] += [1.0]
    queue = Dispatch(trains, cells, {c.run_id: set() for c in cells}, times)
    assert [queue.next()[1] for _ in range(3)] == [base[1], base[0], teacher]   # baselines longest first, then teachers
    order = []
    while (item := queue.next()) is not None:
        order.append(item[1].label)
    assert order[0] == kd0.label                                           # 300 s, its own record
    # distill s1 is estimated by its kind (300 s), then the pruning cells (50 s), fp16, baselines
    assert order[1:] == ["digits/tiny-cnn/distill.logit[init=baseline]/s1",
                         "digits/tiny-cnn/prune.magnitude[sparsity=0.5]/s0",
                         "digits/tiny-cnn/prune.magnitude[sparsity=0.5]/s1",
                         "digits/tiny-cnn/quant.fp16/s0", "digits/tiny-cnn/quant.fp16/s1",
                         "digits/tiny-cnn/baseline/s0", "digits/tiny-cnn/baseline/s1"]


def test_wall_times_come_from_records_cell_for_cell_and_by_kind(smoke_config, tmp_path):
    """What a reproduction reads from the committed records: each cell's own wall time and each baseline's training."""
    from slimbench.harness.run.plan import WallTimes
    from slimbench.harness.run.records import load_records
    from slimbench.harness.run.suite import parse_suite

    smoke_config["methods"] = ["baseline", "quant.fp16"]
    suite = parse_suite(smoke_config)
    runner = SuiteRunner(suite, tmp_path, wandb_mode="disabled", progress=False)
    assert not runner.run().failed
    times = WallTimes.read([runner.paths.runs, tmp_path / "nothing-here"])
    records = {r.run_id: r for r in load_records(runner.paths.runs)}
    assert len(records) == 2
    for cell in suite.cells:
        rec = records[cell.run_id]
        assert times.estimate(cell) == (rec.wall_seconds["total"], "the same cell") and rec.wall_seconds["total"] > 0
        checkpoint = Path(rec.baseline_training.checkpoint)
        assert checkpoint.exists() and times.train_estimate(checkpoint) == rec.baseline_training.train_seconds > 0
    smoke_config["seeds"] = [1]                                   # a cell with no record of its own: by its kind
    other = parse_suite(smoke_config).cells[1]
    assert times.estimate(other) == (records[suite.cells[1].run_id].wall_seconds["total"], "model and method")
    assert not WallTimes.read([tmp_path / "nothing-here"]) and WallTimes().estimate(other) is None
