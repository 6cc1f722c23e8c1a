"""Δ accuracy and speedups are shown as noise unless they leave the measured spread."""

from __future__ import annotations

from record_parts import leaderboard_row

from slimbench.harness.report.build import _significant, delta_cell, speedup_cell, with_baseline_spread
from slimbench.harness.report.rows import LeaderboardRow


def _row(family: str, seeds: str, acc: float, std: float, delta: float = 0.0,
         significant: bool = False) -> LeaderboardRow:
    return leaderboard_row(family=family, seeds=seeds, accuracy=acc, accuracy_std=std, delta_accuracy=delta,
                           delta_significant=significant)


def test_paired_deltas_count_only_beyond_both_spreads():
    assert _significant([-0.10, -0.11, -0.09], [0.89, 0.90, 0.88])
    assert not _significant([-0.004, 0.003, -0.001], [0.89, 0.90, 0.88])
    assert not _significant([-0.2], [0.9])      # one seed is never "significant"


def test_a_one_seed_row_is_judged_against_its_baselines_seed_spread():
    base = _row("baseline", "0 1 2", 0.89, 0.004)
    small = _row("quantization", "0", 0.888, 0.0, delta=-0.002)
    cliff = _row("pruning", "0", 0.78, 0.0, delta=-0.11)
    _, small, cliff = with_baseline_spread([base, small, cliff])
    assert small.baseline_accuracy_std == 0.004 and small.baseline_seeds == 3
    assert delta_cell(small) == "-0.20 (1 seed, inside baseline spread)"
    assert delta_cell(cliff) == "-11.00 (1 seed, > 2σ baseline)"
    lone = _row("pruning", "0", 0.78, 0.0, delta=-0.11)
    _, lone = with_baseline_spread([_row("baseline", "0", 0.89, 0.0), lone])   # one baseline seed: no spread to judge
    assert lone.baseline_accuracy_std is None and delta_cell(lone) == "-11.00 (1 seed)"


def test_a_speedup_band_containing_one_reads_as_noise():
    assert speedup_cell(1.04, 0.97, 1.08).startswith("≈1.00×")
    assert speedup_cell(2.8, 2.6, 2.9) == "2.80× (2.60–2.90)"


def test_the_run_to_run_spread_widens_the_band_before_it_is_read():
    from slimbench.harness.report.stats import RUN_TO_RUN_SPEEDUP

    assert RUN_TO_RUN_SPEEDUP == 0.08
    assert speedup_cell(1.05, 1.03, 1.06).startswith("≈1.00×")        # 1.03 × 0.92 < 1: one run cannot tell
    assert speedup_cell(1.32, 1.31, 1.40) == "1.32× (1.31–1.40)"
    assert speedup_cell(0.70, 0.70, 0.71) == "0.70× (0.70–0.71)"
