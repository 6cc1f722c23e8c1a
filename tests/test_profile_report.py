"""The time profile in a leaderboard: every share is the recorded phase seconds over the recorded totals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from slimbench.harness.report import profile
from slimbench.harness.run.records import load_records

RUNS = Path(__file__).resolve().parents[1] / "results" / "transformers" / "runs"


def _share(cell: str) -> float:
    return float(cell.rstrip(" %"))


def test_shares_are_the_recorded_phase_seconds_over_the_totals():
    records = [r for r in load_records(RUNS) if r.status == "ok"]
    phases, table = profile.profile_rows(records)
    rows = {row[0]: row for row in table}
    assert "measure.latency" in phases
    assert all(any(p in r.wall_seconds for r in records) for p in phases)   # only what the suite measured
    every = rows["all cells"]
    assert int(every[1]) == len(records)
    total = sum(r.wall_seconds["total"] for r in records)
    latency = sum(r.wall_seconds["measure.latency"] for r in records)
    assert abs(_share(every[4 + phases.index("measure.latency")]) - 100 * latency / total) <= 0.5
    assert abs(float(every[2]) - total / len(records)) <= 0.05
    for row in rows.values():
        assert abs(sum(_share(c) for c in row[4:]) - 100) <= len(row[4:]) * 0.5   # rounding only
    assert sum(int(row[1]) for name, row in rows.items() if name != "all cells") == len(records)


def test_a_record_without_phase_timings_is_left_out_and_the_baselines_are_counted_once():
    records = [r for r in load_records(RUNS) if r.status == "ok"]
    untimed = dataclasses.replace(records[0], wall_seconds={})
    _, table = profile.profile_rows([untimed, *records[1:]])
    rows = {row[0]: row for row in table}
    assert int(rows["all cells"][1]) == len(records) - 1
    n, hours = profile.baseline_training_hours(records)
    checkpoints = {r.baseline_training.checkpoint: r.baseline_training.train_seconds
                   for r in records if r.baseline_training is not None}
    assert n == len(checkpoints) and abs(hours - sum(checkpoints.values()) / 3600) < 1e-9
    # a cell that trained its own baseline holds that training in its time: the footer leaves it out
    first = records[0]
    trained_inside = dataclasses.replace(first, wall_seconds={**first.wall_seconds,
                                                              "baseline": first.baseline_training.train_seconds + 1})
    n_in, hours_in = profile.baseline_training_hours([trained_inside, *records[1:]])
    assert n_in == n - 1
    assert abs(hours - hours_in - first.baseline_training.train_seconds / 3600) < 1e-9
    lines = profile.markdown(records)
    assert lines[0] == "## Where the time goes" and f"{n}, {hours:.2f} h of training" in "\n".join(lines)
    assert profile.markdown([untimed]) == []
