"""The harness measures what a model is; a method's claims are kept, checked and flagged, never printed as facts."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from torch import nn

from slimbench.baselines import build_model
from slimbench.deploy.runtimes import load_artifact
from slimbench.harness.report.build import build_report, speedup_cell
from slimbench.harness.report.stats import widened
from slimbench.harness.run.records import load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import parse_suite
from slimbench.methods import METHODS, Method, MethodContext, Outcome, register_method
from tests.conftest import SMOKE


@dataclass
class _Unchanged(Method):
    """Returns the model as it is (a control for timing noise)."""

    family: ClassVar[str] = "pruning"
    uses_finetune: ClassVar[bool] = False

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        return Outcome(model)


@dataclass
class _Liar(_Unchanged):
    """Returns the model unchanged but claims 90 % sparsity and physically faster compute."""

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        return Outcome(model, compute="physical", requested={"sparsity": 0.9}, achieved={"sparsity": 0.9})


@dataclass
class _Narrower(_Unchanged):
    """A physically smaller dense network: the same architecture at half the width."""

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        return Outcome(build_model("tiny-cnn", ctx.task.spec, ctx.task.num_classes, {"width": 8}))


@dataclass
class _TestPeeker(_Unchanged):
    """Tries to fine-tune on the test split."""

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        ctx.task.test_dataloader()
        return Outcome(model)


TEST_METHODS = {"test.unchanged": _Unchanged, "test.liar": _Liar, "test.narrower": _Narrower,
                "test.peek": _TestPeeker}


MEASURE = {**SMOKE["measure"], "rounds": 9, "min_run_time": 0.01}   # enough rounds for a fair noise band


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory):
    for name, cls in TEST_METHODS.items():
        register_method(name)(cls)
    config = copy.deepcopy(SMOKE)
    config["methods"] = ["baseline", {"name": "prune.magnitude", "params": {"sparsity": 0.5}}, "quant.fp16",
                         *TEST_METHODS]
    config["measure"] = MEASURE
    root = tmp_path_factory.mktemp("results")
    runner = SuiteRunner(parse_suite(config), root, wandb_mode="disabled", progress=False)
    try:
        outcome = runner.run()
        rows = build_report(runner.paths.root)
        yield runner, outcome, {r.method: r for r in load_records(runner.paths.runs)}, rows
    finally:
        for name in TEST_METHODS:
            METHODS.unregister(name)


def test_false_claims_are_measured_and_flagged(evidence_run):
    runner, _, records, rows = evidence_run
    rec = records["test.liar"]
    assert rec.compression.storage == "dense fp32" and rec.compression.compute == "dense fp32"
    assert rec.compression.achieved["sparsity"] == 0.0
    assert rec.compression.claimed.achieved == {"sparsity": 0.9}
    assert not rec.compression.verified and len(rec.compression.disagreements) == 2
    assert rec.metrics.nonzero_params == rec.metrics.params
    row = next(r for r in rows if r.method == "test.liar")
    assert row.claim_verified is False
    board = (runner.paths.root / "leaderboard.md").read_text()
    liar_line = next(line for line in board.splitlines() if "test.liar" in line)
    assert "claim not verified" in liar_line and "dense fp32 / dense fp32" in liar_line


def test_an_unchanged_model_shows_no_speedup(evidence_run):
    """The same weights in two sessions must read as noise, never as a speedup or a slowdown.

    The round-to-round band alone only holds in-process noise: two sessions of one graph can sit a few per cent
    apart for the whole run (memory placement), so the harness reads a band widened by the measured run-to-run
    spread. Real timings on a busy machine can stray beyond any spread, so this asserts that reading on the band
    the record holds and on a band offset as two sessions are, not that this run's timings fell inside it.
    """
    runner, _, records, rows = evidence_run
    rec = records["test.unchanged"]
    assert rec.compression.verified and rec.compression.compute == "dense fp32"
    assert set(rec.metrics.speedup) >= {"eager", "onnxruntime"}
    for bands in rec.metrics.speedup.values():
        for band in bands.values():
            assert band.low <= band.ratio <= band.high and band.rounds == MEASURE["rounds"]
    row = next(r for r in rows if r.method == "test.unchanged")
    shown = speedup_cell(row.speedup_b1_x, row.speedup_b1_low, row.speedup_b1_high)
    low, high = widened(row.speedup_b1_low, row.speedup_b1_high)
    assert shown.startswith("≈1.00×") == (low <= 1.0 <= high), shown
    assert speedup_cell(0.95, 0.90, 0.99).startswith("≈1.00×")   # one graph, two sessions a few per cent apart
    line = next(line for line in (runner.paths.root / "leaderboard.md").read_text().splitlines()
                if "test.unchanged" in line)
    assert shown in line


def test_sparse_storage_runs_masked_dense_kernels(evidence_run):
    rec = evidence_run[2]["prune.magnitude"]
    assert rec.compression.storage == "sparse" and rec.compression.compute == "masked"
    assert abs(rec.compression.achieved["sparsity"] - 0.5) < 0.01 and rec.compression.verified


def test_fp16_file_on_a_runtime_that_upcasts_is_fp16_storage_fp32_compute(evidence_run):
    rec = evidence_run[2]["quant.fp16"]
    assert rec.metrics.runtime == "onnxruntime"
    assert rec.compression.storage.startswith("fp16")
    assert rec.compression.compute == "dense fp32"      # ONNX Runtime's CPU provider casts fp16 weights up
    assert rec.compression.evidence.compute.kernels.get("float16", 0) == 0


def test_a_smaller_network_is_smaller_dense_compute(evidence_run):
    rec = evidence_run[2]["test.narrower"]
    assert rec.compression.compute == "smaller dense"
    assert rec.metrics.macs < rec.reference.macs and rec.metrics.params < rec.reference.params


def test_reading_the_test_split_fails_the_cell_with_a_clear_error(evidence_run):
    _, outcome, records, rows = evidence_run
    (label, error), = [(k, v) for k, v in outcome.failed.items() if "test.peek" in k]
    assert "may not read" in error and "test" in error
    assert records["test.peek"].status == "failed" and records["test.peek"].details["error"] == error
    assert records["test.peek"].metrics is None and not [r for r in rows if r.method == "test.peek"]


@pytest.mark.parametrize("method", ["baseline", "prune.magnitude", "quant.fp16", "test.narrower"])
def test_artifact_reloads_to_the_measured_model(evidence_run, method):
    """weights_only=True, structure included: re-evaluating the artifact gives the recorded accuracy."""
    runner, _, records, _ = evidence_run
    rec = records[method]
    data = (runner.paths.root / rec.artifact.path).read_bytes()
    task = runner.task(runner.suite.cells[0].task)
    model = load_artifact(data, lambda: build_model("tiny-cnn", task.spec, task.num_classes, {}))
    from slimbench.harness.measure.quality import evaluate

    accuracy, _ = evaluate(model, task)
    assert accuracy == pytest.approx(rec.metrics.accuracy, abs=1e-9)


def test_same_cell_twice_is_identical(evidence_run, tmp_path: Path):
    """Determinism on one machine: retrain from an empty cache, get the same accuracy and stored bytes."""
    runner, _, records, _ = evidence_run
    config = copy.deepcopy(SMOKE)
    config["methods"] = [{"name": "prune.magnitude", "params": {"sparsity": 0.5}}]
    config["measure"] = MEASURE
    again = SuiteRunner(parse_suite(config), tmp_path, wandb_mode="disabled", progress=False)
    assert not again.run().failed
    (rec,) = load_records(again.paths.runs)
    first = records["prune.magnitude"]
    assert rec.run_id == first.run_id
    assert rec.metrics.accuracy == first.metrics.accuracy
    assert rec.metrics.stored_bytes == first.metrics.stored_bytes
    assert rec.artifact.sha256 == first.artifact.sha256


def test_a_method_version_bump_reruns_only_its_cells(evidence_run, monkeypatch):
    runner, _, _, _ = evidence_run
    before = {c.label: c.run_id for c in runner.suite.cells}
    entry = METHODS.entry("test.unchanged")
    monkeypatch.setitem(METHODS._entries, "test.unchanged", type(entry)(entry.name, entry.obj, entry.description, 2))
    config = json.loads(json.dumps({**SMOKE, "methods": ["baseline", "test.unchanged", "test.liar"],
                                    "measure": MEASURE}))
    after = {c.label: c.run_id for c in parse_suite(config).cells}
    changed = {label for label in after if after[label] != before.get(label)}
    assert changed == {label for label in after if "test.unchanged" in label}
    assert all(runner.paths.runs.joinpath(f"{after[label]}.json").exists() for label in after if label not in changed)


def test_compare_passes_a_folder_against_itself_and_fails_on_a_changed_exact_figure(evidence_run, tmp_path: Path,
                                                                                      capsys):
    import shutil

    from slimbench.harness.cli import main

    runner = evidence_run[0]
    copy_dir = tmp_path / "copy"
    shutil.copytree(runner.paths.root / "runs", copy_dir / "runs")
    assert main(["compare", str(runner.paths.root), str(copy_dir), "--out", str(tmp_path / "same.md")]) == 0
    # these records ran with this process's own kernels: "bit for bit" names what the records say, not the pins
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("cells bit for bit.")
    table = (tmp_path / "same.md").read_text()
    assert "0 exact figures differ, 0 outside tolerance" in table
    victim = next(p for p in (copy_dir / "runs").glob("*.json")
                  if json.loads(p.read_text())["method"] == "prune.magnitude")
    data = json.loads(victim.read_text())
    data["metrics"]["macs"] += 1
    data["metrics"]["accuracy"] += 0.2
    victim.write_text(json.dumps(data))
    assert main(["compare", str(runner.paths.root), str(copy_dir), "--out", str(tmp_path / "diff.md")]) == 1
    table = (tmp_path / "diff.md").read_text()
    assert "2 exact figures differ, 0 outside tolerance" in table   # same kernels: accuracy is exact too
    assert "DIFFERS (exact figure)" in table and "exact (native" in table


def test_compare_a_cell_that_fails_on_one_side_only_is_an_exact_difference(evidence_run, tmp_path: Path):
    import shutil

    from slimbench.harness.replicate.compare import compare_dirs

    runner = evidence_run[0]
    copy_dir = tmp_path / "copy"
    shutil.copytree(runner.paths.root / "runs", copy_dir / "runs")
    victim = next(p for p in (copy_dir / "runs").glob("*.json") if json.loads(p.read_text())["method"] == "quant.fp16")
    data = json.loads(victim.read_text())
    data.update(status="failed", metrics=None, details={**data["details"], "error": "RuntimeError: boom"})
    victim.write_text(json.dumps(data))
    checks, _ = compare_dirs(runner.paths.root, copy_dir)
    status = [c for c in checks if c.figure == "status"]
    assert [(c.reference, c.new, c.ok) for c in status if c.new == "failed" and c.reference == "ok"] == [
        ("ok", "failed", False)]
    assert all(c.ok for c in status if c.reference == c.new == "failed")   # the same failure on both sides


def test_compare_holds_corrupted_accuracy_to_accuracys_tolerance(evidence_run, tmp_path: Path):
    import shutil

    from slimbench.harness.replicate.compare import compare_dirs

    runner = evidence_run[0]
    copy_dir = tmp_path / "copy"
    shutil.copytree(runner.paths.root / "runs", copy_dir / "runs")
    checks, _ = compare_dirs(runner.paths.root, copy_dir)
    corrupted = [c for c in checks if c.figure == "corrupted accuracy"]
    assert corrupted and all(c.ok for c in corrupted)
    victim = next(p for p in (copy_dir / "runs").glob("*.json") if json.loads(p.read_text())["method"] == "quant.fp16")
    data = json.loads(victim.read_text())
    data["metrics"]["mean_corrupted_accuracy"] -= 0.01
    victim.write_text(json.dumps(data))
    checks, _ = compare_dirs(runner.paths.root, copy_dir)
    assert [c.ok for c in checks if c.figure == "corrupted accuracy" and c.reference != c.new] == [False]
