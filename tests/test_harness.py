"""End to end on a seconds-long suite: records, skipping, resuming, leaderboard, W&B, bad input."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from slimbench.core.errors import CheckpointError, ConfigError, DatasetMissingError, UnknownNameError
from slimbench.deploy.packing import Packed, unpack_state_dict
from slimbench.harness.cli import main
from slimbench.harness.report.build import build_report
from slimbench.harness.run.records import RunRecord, has_record, load_records, read_record
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import load_suite, parse_suite
from slimbench.methods.pruning import MagnitudePruning
from tests.wandb_offline import read_offline_summary


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from tests.conftest import SMOKE

    root = tmp_path_factory.mktemp("results")
    suite = parse_suite(json.loads(json.dumps(SMOKE)))
    runner = SuiteRunner(suite, root, wandb_mode="offline", progress=False)
    outcome = runner.run()
    rows = build_report(runner.paths.root)
    return runner, outcome, rows


def test_every_cell_writes_one_record(smoke_run):
    runner, outcome, _ = smoke_run
    assert not outcome.failed and len(outcome.done) == 2
    records = {r.method: r for r in load_records(runner.paths.runs)}
    assert set(records) == {"baseline", "prune.magnitude"}
    base = records["baseline"]
    assert base.status == "ok" and base.compression.label == "reference"
    assert 0.3 < base.metrics.accuracy <= 1.0  # learned something on 10 classes
    for key in ("python", "torch", "lightning", "timm", "torchmetrics"):
        assert key in base.provenance.versions
    assert base.hardware.logical_cpus >= 1 and base.provenance.git.commit
    assert base.config["seed"] == 0 and base.seed == 0
    assert base.metrics.params == base.reference.params > 0
    assert base.metrics.macs > 0 and base.metrics.latency_b1_ms > 0 and base.metrics.latency_bn_ms > 0


def test_pruned_cell_has_requested_sparsity_and_honest_label(smoke_run):
    runner, _, _ = smoke_run
    rec = next(r for r in load_records(runner.paths.runs) if r.method == "prune.magnitude")
    assert rec.compression.requested == {"sparsity": 0.5}
    assert abs(rec.compression.achieved["sparsity"] - 0.5) < 0.005
    # The artifact really is the pruned model: load it back (weights_only) and count zeros ourselves.
    payload = torch.load(runner.paths.root / rec.artifact.path, weights_only=True)
    state = unpack_state_dict(Packed.from_payload(payload))
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(zeros - 0.5) < 0.005
    assert rec.metrics.stored_bytes < 0.7 * rec.reference.stored_bytes
    # measured, not claimed: sparse storage, and the same dense kernels with zeros in them
    assert rec.compression.storage == "sparse" and rec.compression.compute == "masked"
    assert rec.compression.verified and rec.compression.claimed.compute == "simulated"
    assert rec.metrics.nonzero_params < rec.metrics.params


def test_pruning_reports_layers_it_emptied():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)   # far smaller than the first layer: global L1 removes it first
    out = MagnitudePruning(sparsity=0.8, finetune=False).apply(model, ctx=None)
    assert out.details["empty_layers"] == ["2"]
    assert not model[2].weight.any() and model[0].weight.any()
    assert abs(out.achieved["sparsity"] - 0.8) < 0.005


def test_record_round_trips(smoke_run):
    runner, _, _ = smoke_run
    for path in runner.paths.runs.glob("*.json"):
        rec = read_record(path)
        assert RunRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
        assert path.stem == rec.run_id


def test_leaderboard_row_equals_its_record(smoke_run):
    runner, _, rows = smoke_run
    with open(runner.paths.root / "leaderboard.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == len(rows) == 2
    for row in csv_rows:
        rec = read_record(runner.paths.runs / f"{row['run_ids']}.json")
        assert (row["task"], row["model"], row["method"]) == (rec.task, rec.model, rec.method)
        assert float(row["accuracy"]) == pytest.approx(rec.metrics.accuracy, rel=1e-5)
        assert int(row["stored_bytes"]) == rec.metrics.stored_bytes
        assert int(row["nonzero_params"]) == rec.metrics.nonzero_params
        assert float(row["compression_x"]) == pytest.approx(rec.reference.stored_bytes / rec.metrics.stored_bytes,
                                                            rel=1e-5)
        assert row["label"] == rec.compression.label
    md = (runner.paths.root / "leaderboard.md").read_text()
    assert "## digits" in md and "prune.magnitude" in md
    assert (runner.paths.root / "pareto_digits.png").stat().st_size > 10_000


def test_wandb_offline_run_has_the_summary(smoke_run):
    runner, _, _ = smoke_run
    rec = next(r for r in load_records(runner.paths.runs) if r.method == "prune.magnitude")
    assert rec.wandb.mode == "offline"
    run_dir = Path(rec.wandb.dir)
    assert run_dir.is_dir() and run_dir.is_relative_to(runner.paths.root / "wandb")
    summary = read_offline_summary(run_dir)
    assert summary["metrics/accuracy"] == pytest.approx(rec.metrics.accuracy)
    assert summary["run_id"] == rec.run_id


def test_reading_a_run_file_while_wandb_still_writes_it_sees_a_prefix(smoke_run, tmp_path):
    rec = next(r for r in load_records(smoke_run[0].paths.runs) if r.method == "prune.magnitude")
    [run_file] = Path(rec.wandb.dir).glob("*.wandb")
    data = run_file.read_bytes()
    full = read_offline_summary(run_file.parent)
    for cut in range(7, len(data), max(1, len(data) // 97)):   # torn at header, inside a chunk, between chunks
        (tmp_path / "torn").mkdir(exist_ok=True)
        (tmp_path / "torn" / run_file.name).write_bytes(data[:cut])
        part = read_offline_summary(tmp_path / "torn")
        assert set(part) <= set(full)   # a prefix of the summary updates, never an error or a made-up key


def test_rerun_skips_finished_cells(smoke_run):
    runner, _, _ = smoke_run
    before = {p.name: p.stat().st_mtime_ns for p in runner.paths.runs.glob("*.json")}
    again = SuiteRunner(runner.suite, runner.paths.root.parent, wandb_mode="disabled", progress=False).run()
    assert again.done == [] and len(again.skipped) == 2
    assert {p.name: p.stat().st_mtime_ns for p in runner.paths.runs.glob("*.json")} == before


def test_interrupted_suite_resumes_where_it_stopped(tmp_path, smoke_config, monkeypatch):
    suite = parse_suite(smoke_config)
    original = MagnitudePruning.apply

    def crash(self, model, ctx):
        raise RuntimeError("power cut")

    monkeypatch.setattr(MagnitudePruning, "apply", crash)
    first = SuiteRunner(suite, tmp_path, wandb_mode="disabled", progress=False).run()
    assert len(first.done) == 1 and len(first.failed) == 1
    kept = {r.method: r for r in load_records(tmp_path / "smoke" / "runs")}
    assert kept["baseline"].status == "ok"
    assert kept["prune.magnitude"].status == "failed" and "power cut" in kept["prune.magnitude"].details["error"]
    monkeypatch.setattr(MagnitudePruning, "apply", original)
    second = SuiteRunner(suite, tmp_path, wandb_mode="disabled", progress=False).run()
    assert len(second.done) == 1 and len(second.skipped) == 1
    assert sorted((r.method, r.status) for r in load_records(tmp_path / "smoke" / "runs")) == [
        ("baseline", "ok"), ("prune.magnitude", "ok")]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, smoke_config):
    smoke_config["methods"] = ["baseline"]
    suite = parse_suite(smoke_config)
    runner = SuiteRunner(suite, tmp_path, wandb_mode="disabled", progress=False)
    cell = suite.cells[0]
    path = runner.cache.path(cell.task, cell.model, cell.train, cell.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.*delete it to retrain"):
        runner.run_cell(cell)
    assert not (tmp_path / "smoke" / "runs").exists()


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda c: c.update(tasks=["no-such-task"]), UnknownNameError, "valid tasks: .*fashion-mnist"),
        (lambda c: c.update(models=["resnet-9000"]), UnknownNameError, "valid models: .*mobilenetv2"),
        (lambda c: c.update(methods=["prune.randomly"]), UnknownNameError, "valid methods: .*prune.magnitude"),
        (lambda c: c.update(models=["timm/resnet181"]), UnknownNameError, "close matches: resnet18"),
        (lambda c: c.update(methods=[{"name": "prune.magnitude", "params": {"sparsity": "lots"}}]),
         ConfigError, "must be a number"),
        (lambda c: c.update(methods=[{"name": "prune.magnitude", "params": {"amount": 0.5}}]),
         ConfigError, "unknown parameter.*amount.*valid parameters: sparsity"),
        (lambda c: c.update(train={"epochs": "three"}), ConfigError, "must be an integer"),
        (lambda c: c.update(seeds="0"), ConfigError, "seeds"),
        (lambda c: c.update(models=[{"name": "tiny-cnn", "train": {"lr": "fast"}}]), ConfigError,
         "train of model tiny-cnn: parameter 'lr' must be a number"),
        (lambda c: c.update(tasks=[{"name": "digits", "train": {"epochs": 0.5}}]), ConfigError,
         "train of task digits: parameter 'epochs' must be an integer"),
        (lambda c: c.update(tasks=[{"name": "digits", "budget": {}}]), ConfigError, "optional `params`, `train`"),
        (lambda c: c.update(extra_key=1), ConfigError, "unknown key.*extra_key.*valid keys"),
    ],
)
def test_bad_suites_fail_before_anything_runs(tmp_path, smoke_config, write_suite, capsys, mutate, error, message):
    mutate(smoke_config)
    path = write_suite(smoke_config)
    with pytest.raises(error, match=message):
        load_suite(path)
    assert main(["run", str(path), "--results", str(tmp_path / "out"), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimbench: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_task_and_model_train_overrides_reach_only_their_cells(smoke_config):
    smoke_config["tasks"] = ["digits", {"name": "digits", "params": {"val_size": 200}, "train": {"lr": 0.05}}]
    smoke_config["models"] = ["tiny-cnn", {"name": "tiny-cnn", "params": {"width": 8}, "train": {"epochs": 5}}]
    smoke_config["methods"] = ["baseline"]
    budgets = {(c.task.params["val_size"], c.model.params["width"]): c.train for c in parse_suite(smoke_config).cells}
    default = budgets[next(k for k in budgets if k[0] != 200 and k[1] != 8)]
    assert (default.lr, default.epochs) == (smoke_config["train"]["lr"], smoke_config["train"]["epochs"])
    assert (budgets[200, 16].lr, budgets[200, 16].epochs) == (0.05, default.epochs)
    assert (budgets[200, 8].lr, budgets[200, 8].epochs) == (0.05, 5)       # task first, then model
    assert len({c.run_id for c in parse_suite(smoke_config).cells}) == 4


def test_pair_train_overrides_apply_after_task_and_model_budgets(smoke_config):
    smoke_config["tasks"] = ["digits", {"name": "digits", "params": {"val_size": 200}, "train": {"lr": 0.05}}]
    smoke_config["models"] = ["tiny-cnn", "bag-of-embeddings"]
    smoke_config["methods"] = ["baseline"]
    smoke_config["train_overrides"] = [{"task": "digits", "model": "tiny-*", "train": {"epochs": 7}},
                                       {"model": "bag-of-embeddings", "train": {"lr": 0.2}}]
    budgets = {(c.task.params["val_size"], c.model.name): c.train for c in parse_suite(smoke_config).cells}
    assert {k: (b.lr, b.epochs) for k, b in budgets.items() if k[1] == "tiny-cnn"} == {
        (200, "tiny-cnn"): (0.05, 7), (next(k[0] for k in budgets if k[0] != 200), "tiny-cnn"): (
            smoke_config["train"]["lr"], 7)}
    assert all(b.lr == 0.2 and b.epochs == smoke_config["train"]["epochs"]
               for k, b in budgets.items() if k[1] == "bag-of-embeddings")   # the rule outranks the task's lr

    # a registered model the suite does not list: a base file's budget for another suite, applied to no cell here
    smoke_config["train_overrides"] = [{"model": "mobilenetv2", "train": {"epochs": 9}}]
    assert {c.train.epochs for c in parse_suite(smoke_config).cells} == {smoke_config["train"]["epochs"]}
    smoke_config["train_overrides"] = [{"task": "digit", "train": {"epochs": 2}}]
    with pytest.raises(ConfigError, match="matches no task × model of this suite; tasks: digits"):
        parse_suite(smoke_config)
    smoke_config["train_overrides"] = [{"model": "tiny-cnn", "epochs": 2}]
    with pytest.raises(ConfigError, match="needs `train:`"):
        parse_suite(smoke_config)
    smoke_config["train_overrides"] = [{"model": "tiny-cnn", "train": {"epochz": 2}}]
    with pytest.raises(ConfigError, match="epochz"):
        parse_suite(smoke_config)


def test_records_of_an_edited_budget_stay_on_disk_but_out_of_the_leaderboard(tmp_path, smoke_config, write_suite):
    smoke_config["methods"] = ["baseline"]
    out = ["--results", str(tmp_path / "out"), "--wandb", "disabled", "--no-progress"]
    assert main(["run", str(write_suite(smoke_config)), *out]) == 0
    smoke_config["train"]["epochs"] = 1                      # a new budget: a new cell beside the old record
    path = write_suite(smoke_config)
    assert main(["run", str(path), *out]) == 0
    suite_dir = tmp_path / "out" / "smoke"
    new_id = parse_suite(smoke_config).cells[0].run_id

    def rows() -> list[dict[str, str]]:
        with open(suite_dir / "leaderboard.csv") as fh:
            return list(csv.DictReader(fh))

    assert len(list((suite_dir / "runs").glob("*.json"))) == 2
    assert [(r["run_ids"], r["seeds"]) for r in rows()] == [(new_id, "0")]
    assert main(["report", str(suite_dir)]) == 0              # without --suite: every record, as seeds of one row
    assert len(rows()) == 1 and rows()[0]["seeds"] == "0 0"
    assert main(["report", str(suite_dir), "--suite", str(path)]) == 0
    assert [r["run_ids"] for r in rows()] == [new_id]


def test_malformed_yaml_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("suite: x\nmethods: [baseline\n")
    assert main(["run", str(path), "--results", str(tmp_path / "out")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_dataset_names_where_it_looked_and_how_to_get_it(tmp_path):
    from slimbench.tasks import build_task

    with pytest.raises(DatasetMissingError) as err:
        build_task("fashion-mnist", {"root": str(tmp_path / "empty"), "download": False})
    assert str(tmp_path / "empty") in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)


def test_missing_dataset_cell_is_recorded_as_failed_and_shown(tmp_path, smoke_config):
    smoke_config["tasks"] = [{"name": "fashion-mnist",
                              "params": {"root": str(tmp_path / "nowhere"), "download": False}}]
    smoke_config["methods"] = ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}}]
    outcome = SuiteRunner(parse_suite(smoke_config), tmp_path, wandb_mode="disabled", progress=False).run()
    assert len(outcome.failed) == 2 and "not found" in next(iter(outcome.failed.values()))
    records = load_records(tmp_path / "smoke" / "runs")
    assert [r.status for r in records] == ["failed", "failed"]
    assert not any(has_record(tmp_path / "smoke" / "runs", r.run_id) for r in records)   # a rerun retries them
    build_report(tmp_path / "smoke")
    for name in ("leaderboard.md", "leaderboard_by_method.md", "matrix.md"):
        text = (tmp_path / "smoke" / name).read_text()
        assert "failed" in text.lower(), name
    assert "not found" in (tmp_path / "smoke" / "leaderboard_by_method.md").read_text()
    assert "prune.magnitude" in (tmp_path / "smoke" / "matrix.md").read_text()


def test_online_wandb_without_a_key_is_refused(tmp_path, smoke_config, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(ConfigError, match="needs an API key"):
        SuiteRunner(parse_suite(smoke_config), tmp_path, wandb_mode="online")


def test_wandb_suite_summary_logs_the_three_leaderboards_and_the_plots(smoke_run):
    runner, _, rows = smoke_run
    before = set((runner.paths.root / "wandb").glob("offline-run-*"))
    runner.log_leaderboard(rows)
    [run_dir] = set((runner.paths.root / "wandb").glob("offline-run-*")) - before
    deadline = time.time() + 60   # W&B's own writer process may still be flushing the run file on a busy machine
    summary = read_offline_summary(run_dir)
    while "leaderboard/_type" not in summary and time.time() < deadline:
        time.sleep(0.5)
        summary = read_offline_summary(run_dir)
    for key in ("leaderboard", "leaderboard_by_method", "matrix"):
        assert summary[f"{key}/_type"] == "table-file", key
    assert summary["leaderboard/nrows"] == len(rows)
    assert summary["pareto/digits/_type"] == "image-file" and summary["robustness/digits/_type"] == "image-file"


def test_a_record_profiles_where_its_cell_spent_its_time(smoke_run):
    runner, _, _ = smoke_run
    for rec in load_records(runner.paths.runs):
        wall = rec.wall_seconds
        phases = {k: v for k, v in wall.items() if k.startswith("measure.")}
        assert set(phases) == {"measure.deploy", "measure.evaluate", "measure.robustness", "measure.sizes",
                               "measure.latency", "measure.counting"}
        assert all(v >= 0 for v in wall.values())
        assert sum(phases.values()) <= wall["measure"] + 0.05
        assert wall["task"] + wall["baseline"] + wall["apply"] + wall["measure"] <= wall["total"] + 0.05


def test_git_state_names_every_changed_file_in_full(tmp_path: Path, monkeypatch):
    """A refused dirty run names the files; porcelain lines start with a space for modified files, which must
    not cost the first file its first letter."""
    import subprocess

    from slimbench.harness.run import environment

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "harness.py").write_text("a = 1\n")
    git("add", "harness.py")
    git("commit", "-qm", "one")
    (tmp_path / "harness.py").write_text("a = 2\n")
    (tmp_path / "new_method.py").write_text("b = 1\n")
    monkeypatch.setattr(environment, "PROJECT_ROOT", tmp_path)
    state = environment.git_state()
    assert state["dirty"] is True and state["changed"] == ["harness.py", "new_method.py"]
