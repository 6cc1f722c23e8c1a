"""The three leaderboards are views of the same records: a row is the mean and spread of its records, a method's
table lists every task × model it ran on, failed cells stay visible, and the Pareto front is the true front."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from record_parts import band, compression, metrics, reference

from slimbench.harness.report.build import build_report, leaderboard_rows, pareto_front
from slimbench.harness.run.record_parts import GitState, Hardware, Provenance
from slimbench.harness.run.records import RunRecord, write_record


def _record(task: str, model: str, method: str, seed: int, acc: float, stored: int = 1000, status: str = "ok",
            params: dict | None = None, ref_acc: float = 0.9) -> RunRecord:
    family = "baseline" if method == "baseline" else "pruning"
    params = params or {}
    ok = status == "ok"
    return RunRecord(
        run_id=f"{task}-{model}-{method}-{seed}-{len(params)}", suite="t", status=status, task=task, model=model,
        method=method, family=family, seed=seed, config={"method": {"name": method, "params": params}, "versions": {},
                                                          "measure": {"threads": 1}},
        metrics=metrics(accuracy=acc, macro_f1=acc - 0.01, nonzero_params=50, stored_bytes=stored, gzip_bytes=stored,
                        latency_b1_ms=1.0, latency_bn_ms=10.0,
                        speedup={"eager": {"b1": band(1.0, 0.9, 1.1), "bn": band(1.0, 0.95, 1.05)}}) if ok else None,
        reference=reference(accuracy=ref_acc, stored_bytes=4000, latency_b1_ms=1.0, latency_bn_ms=10.0) if ok else None,
        compression=compression("sparse", "masked", baseline=method == "baseline") if ok else None,
        details={"params_given": params, **({"error": "RuntimeError: out of memory"} if status != "ok" else {})},
        provenance=Provenance(git=GitState(commit="abc", dirty=False)), hardware=Hardware(cpu="test", logical_cpus=2))


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    runs = tmp_path / "t" / "runs"
    for rec in [
        _record("vision", "cnn", "baseline", 0, 0.90), _record("vision", "cnn", "baseline", 1, 0.92),
        _record("vision", "cnn", "prune.magnitude", 0, 0.85, stored=500, ref_acc=0.90),
        _record("vision", "cnn", "prune.magnitude", 1, 0.89, stored=500, ref_acc=0.92),
        _record("text", "cnn", "baseline", 0, 0.70),
        _record("text", "cnn", "prune.magnitude", 0, 0.60, ref_acc=0.70),
        _record("speech", "cnn", "baseline", 0, 0.80),
        _record("speech", "cnn", "prune.magnitude", 0, 0.0, status="failed"),
    ]:
        write_record(runs, rec)
    return tmp_path / "t"


def test_a_row_is_the_mean_and_std_of_its_records(suite_dir: Path):
    rows = build_report(suite_dir)
    row = next(r for r in rows if r.task == "vision" and r.method == "prune.magnitude")
    assert row.seeds == "0 1"
    assert row.accuracy == pytest.approx(statistics.fmean([0.85, 0.89]))
    assert row.accuracy_std == pytest.approx(statistics.stdev([0.85, 0.89]))
    assert row.delta_accuracy == pytest.approx(statistics.fmean([0.85 - 0.90, 0.89 - 0.92]))
    assert row.compression_x == pytest.approx(8.0)


def test_the_method_table_lists_every_task_and_model_it_ran_on_failed_ones_included(suite_dir: Path):
    build_report(suite_dir)
    text = (suite_dir / "leaderboard_by_method.md").read_text()
    section = text.split("## prune.magnitude")[1]
    for task in ("vision", "text", "speech"):
        assert f"| {task}" in section, task
    assert "failed" in section and "out of memory" in section
    csv_rows = (suite_dir / "leaderboard_by_method.csv").read_text().splitlines()
    assert sum(line.startswith("prune.magnitude,") for line in csv_rows) == 3


def test_the_matrix_has_a_cell_per_method_and_task_and_marks_failures(suite_dir: Path):
    build_report(suite_dir)
    text = (suite_dir / "matrix.md").read_text()
    line = next(row for row in text.splitlines() if row.startswith("| prune.magnitude"))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    header = next(row for row in text.splitlines() if row.startswith("| method"))
    tasks = [c.strip() for c in header.strip("|").split("|")][1:]
    by_task = dict(zip(tasks, cells))
    assert by_task["speech"] == "failed"
    assert by_task["text"].startswith("Δ -10.00 (1 seed)")        # the text baseline has one seed: no spread to judge
    assert by_task["vision"].startswith("Δ -4.00 *")   # paired Δ -5 and -3: beyond both spreads (1.4 pts)
    assert "8.00× smaller" in by_task["vision"] and "≈1.00×" in by_task["vision"]


def test_the_report_rebuilds_byte_identically(suite_dir: Path):
    build_report(suite_dir)
    first = {p.name: p.read_bytes() for p in suite_dir.iterdir() if p.is_file()}
    build_report(suite_dir)
    assert {p.name: p.read_bytes() for p in suite_dir.iterdir() if p.is_file()} == first
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard_by_method.md", "leaderboard_by_method.csv",
            "matrix.md", "matrix.csv", "pareto_vision.png"} <= set(first)


def test_pareto_front_on_hand_made_points():
    points = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.65), (4.0, 0.9), (5.0, 0.9), (0.5, 0.4)]
    assert pareto_front(points) == [(0.5, 0.4), (1.0, 0.5), (2.0, 0.7), (4.0, 0.9)]


def test_failed_records_never_enter_the_means(suite_dir: Path):
    from slimbench.harness.run.records import load_records

    rows = leaderboard_rows(load_records(suite_dir / "runs"))
    assert not [r for r in rows if r.task == "speech" and r.method == "prune.magnitude"]
