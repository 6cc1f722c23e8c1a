"""The training-time section reads its figures from the records' timed epochs, not from anywhere else."""

from __future__ import annotations

import statistics
from pathlib import Path

from slimbench.harness.report.training import baseline_table, fit_table, markdown
from slimbench.harness.run.records import load_records

RUNS = Path(__file__).resolve().parents[1] / "results" / "runtimes" / "runs"


def test_baseline_rows_are_the_cached_baselines_epoch_timings():
    records = load_records(RUNS)
    rows = {r[0]: r for r in baseline_table(records, "fashion-mnist")}
    bases = {r.seed: r.baseline_training for r in records if r.model == "mobilenetv2" and r.status == "ok"}
    assert sorted(bases) == [0, 1, 2]
    per_epoch = [statistics.fmean(b.epoch_seconds) for b in bases.values()]
    row = rows["mobilenetv2"]
    assert row[1] == "0 1 2"
    assert row[5] == f"{statistics.fmean(per_epoch):.1f} ± {statistics.stdev(per_epoch):.1f}"
    accs = [b.test_accuracy for b in bases.values()]
    assert row[2].startswith(f"{statistics.fmean(accs):.4f}")


def test_a_fit_is_compared_per_example_with_its_own_seeds_baseline():
    records = [r for r in load_records(RUNS) if r.model == "squeezenet"]
    rows = [r for r in fit_table(records, "fashion-mnist") if r[1] == "prune.channel"]
    assert len(rows) == 1
    ratios = []
    for rec in (r for r in records if r.method == "prune.channel"):
        b = rec.baseline_training
        base = sum(b.epoch_seconds) / (b.train_batches * int(b.train["batch_size"]) * len(b.epoch_seconds))
        fit = sum(sum(f.epoch_seconds) for f in rec.fits) / sum(
            f.train_batches * f.batch_size * len(f.epoch_seconds) for f in rec.fits)
        ratios.append(base / fit)
    assert rows[0][6] == f"{statistics.fmean(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
    assert len(rows[0][7].split()) == 3


def test_no_section_for_a_task_without_timed_training():
    assert markdown(load_records(RUNS), "synth-kws") == []
