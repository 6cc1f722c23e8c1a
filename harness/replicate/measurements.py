"""What a claim is measured on: each suite's records and leaderboard rows (`load_suites`), and the values read from
them with the interval a verdict reads (`Measurement`). Intervals follow the leaderboard's noise model: seeds' spread
for accuracy (a one-seed row: ±2σ of its baseline's seeds), the round band widened by the run-to-run spread
(`stats.widened`, the reading that prints ≈1.00×) for speed. An inconclusive row says what would decide it
(`to_decide`). Premises are checked in `premises`, verdicts given in `evaluation`.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

from slimbench.core.errors import SlimbenchError
from slimbench.harness.measure.explanation_data import INTEGRATED_GRADIENTS, Explanations, seed_agreements
from slimbench.harness.measure.figures import Metrics, Reference
from slimbench.harness.replicate.claim_schema import Claim
from slimbench.harness.replicate.claim_terms import DELTA_VS_BASELINE, NOISY, PAIRED_ONLY, ROW_VALUES
from slimbench.harness.replicate.claims import Judgement
from slimbench.harness.report.explanations import explained
from slimbench.harness.report.robustness import per_class
from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.report.stats import RUN_TO_RUN_SPEEDUP, mean, short_params, std, widened
from slimbench.harness.run.record_parts import fits_seconds_per_example
from slimbench.harness.run.records import RunRecord, load_records


@dataclass
class SuiteData:
    """One suite's records and the leaderboard rows built from them."""

    name: str
    rows: list[LeaderboardRow]
    records: dict[str, RunRecord]


@dataclass
class Measurement:
    """A measured value, the interval a verdict reads, where it comes from, and how the interval was obtained (so an
    inconclusive row can say what would decide it)."""

    value: float
    low: float | None                # the whole interval a verdict reads; None: one seed, no spread to judge by
    high: float | None
    spread: str                      # how the interval was obtained, as printed
    where: str                       # traceable to records: suite · task · model · method · run_ids
    noise: str = "seeds"             # seeds: ±σ over `seeds` seeds · baseline: one seed, ±2σ of its baseline's
    #                                  timing: the widened round band · exact: a count · none: no spread
    sigma: float | None = None       # seeds / baseline: the σ (one seed's spread) the interval is built from
    seeds: int = 1
    not_testable: list[str] = field(default_factory=list)    # absent premises, each in words
    conditions: list[tuple[str, Judgement]] = field(default_factory=list)   # second figures the claim states
    beside: list[str] = field(default_factory=list)          # further figures printed in the row


def load_suites(results: Path) -> list[SuiteData]:
    """Every suite folder under `results` that has runs/ (hidden folders, e.g. .reproduce, are scratch space)."""
    from slimbench.harness.report.build import leaderboard_rows

    suites = []
    for folder in sorted(p for p in Path(results).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / "runs").is_dir():
            records = load_records(folder / "runs")
            suites.append(SuiteData(folder.name, leaderboard_rows(records), {r.run_id: r for r in records}))
    return suites


# -- values read from records -------------------------------------------------------------------------------------

def per_record(name: str, rec: RunRecord) -> float:
    m, r = record_figures(rec)
    if name == "compression_x":
        return r.stored_bytes / m.stored_bytes
    if name == "gzip_x":
        return r.gzip_bytes / m.gzip_bytes
    if name == "macs_x":
        return r.macs / m.macs
    if name == "connections_x":      # Han et al.'s measure: connections (weights) of the baseline over those kept
        return r.nonzero_params / m.nonzero_params
    if name == "accuracy_pts":
        return 100 * m.accuracy
    if name == "delta_accuracy_pts":
        return 100 * (m.accuracy - r.accuracy)
    if name == "delta_macro_f1_pts":
        return 100 * (m.macro_f1 - r.macro_f1)
    if name in ("corrupted_accuracy_pts", "corrupted_minus_clean_pts"):
        corrupted = m.mean_corrupted_accuracy
        if corrupted is None:
            raise SlimbenchError(f"run record {rec.run_id} has no corrupted-input accuracy (measured before "
                                 f"robustness was, or its task declares no corruptions): rerun its suite")
        return 100 * (corrupted - (m.accuracy if name == "corrupted_minus_clean_pts" else 0.0))
    if name == "delta_vs_teacher_pts":
        return 100 * (m.accuracy - teacher_accuracy(rec))
    if name == "faithfulness_pts":   # insertion AUC − deletion AUC: both curves move with the model's confidence
        ig = _explained(rec).faithfulness[INTEGRATED_GRADIENTS]
        return 100 * (ig.insertion_auc - ig.deletion_auc)
    if name == "train_speedup_x":
        return training_speedup(rec)
    raise ValueError(name)


def _explained(rec: RunRecord) -> Explanations:
    e = explained(rec)
    if e is None:
        raise SlimbenchError(f"run record {rec.run_id} has no explanations (its suite does not set "
                             f"measure.explanations, or the model had no gradients)")
    return e


def training_speedup(rec: RunRecord) -> float:
    """The baseline's training seconds per example ÷ this cell's own training (its fine-tunes or its student's fit),
    each over every epoch it ran: what the method's model costs to train beside the model it came from."""
    base = rec.baseline_training.seconds_per_example() if rec.baseline_training is not None else None
    own = fits_seconds_per_example(rec.fits)
    if base is None or not own:
        raise SlimbenchError(f"run record {rec.run_id} has no timed training beside a timed baseline")
    return base / own


def timed(rec: RunRecord) -> bool:
    """A record whose cell trained (timed per epoch) beside a baseline whose epochs were timed too."""
    base = rec.baseline_training
    return bool(rec.fits and all(f.epoch_seconds for f in rec.fits) and base is not None and base.epoch_seconds
                and base.train_batches)


def record_figures(rec: RunRecord) -> tuple[Metrics, Reference]:
    """The model's and its baseline's figures (every record behind a leaderboard row has both)."""
    if rec.metrics is None or rec.reference is None:
        raise SlimbenchError(f"run record {rec.run_id} ({rec.status}) was never measured")
    return rec.metrics, rec.reference


def teacher_accuracy(rec: RunRecord) -> float:
    teacher = rec.details.get("teacher_accuracy")
    if not isinstance(teacher, (int, float)):
        raise SlimbenchError(f"run record {rec.run_id} names no teacher accuracy (details.teacher_accuracy)")
    return float(teacher)


def matches(row: LeaderboardRow, method: str, params: dict[str, Any], task: str = "*", model: str = "*") -> bool:
    if not all(fnmatch.fnmatchcase(value, pat) for value, pat in
               ((row.method, method), (row.task, task), (row.model, model))):
        return False
    given = json.loads(row.params_json)
    return all(given.get(k) == v for k, v in params.items())


def excluded(row: LeaderboardRow, exclude: dict[str, Any]) -> bool:
    """A row whose params hold every `exclude_params` entry is left out (the sparsity-0 fine-tune control)."""
    if not exclude:
        return False
    given = json.loads(row.params_json)
    return all(k in given and given[k] == v for k, v in exclude.items())


def row_records(row: LeaderboardRow, suite: SuiteData) -> list[RunRecord]:
    return [suite.records[i] for i in row.run_ids.split() if i in suite.records]


def _baseline_sigma(suite: SuiteData, row: LeaderboardRow, metric: str) -> tuple[float, int]:
    """σ (points) of the same task × model baseline's seeds: a one-seed row is judged against it (2σ), as in the
    leaderboard."""
    rows = [r for r in suite.rows if r.method == "baseline" and r.task == row.task and r.model == row.model]
    if not rows:
        return 0.0, 0
    recs = row_records(max(rows, key=lambda r: len(r.seeds.split())), suite)
    return 100 * std([getattr(record_figures(r)[0], metric) for r in recs]), len(recs)


def _one_seed(value: float, suite: SuiteData, row: LeaderboardRow, name: str, how: str = "") -> dict[str, Any]:
    """The interval of a one-seed value: ±2σ of its baseline's seeds for a noisy value (as the leaderboard judges
    a one-seed Δ), else none (a one-seed row without a measured spread is never reproduced)."""
    if name not in NOISY:
        return {"low": None, "high": None, "spread": f"(1 seed{how}: no spread measured)", "noise": "none"}
    metric = ("macro_f1" if name == "delta_macro_f1_pts" else
              "mean_corrupted_accuracy" if name.startswith("corrupted_") else "accuracy")
    sigma, n = _baseline_sigma(suite, row, metric)
    if n < 2:
        return {"low": None, "high": None, "spread": f"(1 seed{how}; its baseline has {n} seed: no spread)",
                "noise": "none"}
    return {"low": value - 2 * sigma, "high": value + 2 * sigma, "noise": "baseline", "sigma": sigma,
            "spread": f"± {2 * sigma:.2f} (1 seed{how}: 2σ of its baseline's {n} seeds)"}


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _where(suite: SuiteData, row: LeaderboardRow, recs: list[RunRecord]) -> str:
    given = short_params(row.params_given)
    dirty = [r for r in recs if r.provenance.git.dirty]
    return (f"{suite.name} · {row.task} · {row.model} · {row.method}" + (f" ({given})" if given else "")
            + " · runs " + " ".join(r.run_id for r in recs)
            + (f" · ⚠ {len(dirty)} of {len(recs)} records from a dirty tree (commit "
               f"{(dirty[0].provenance.git.commit or '?')[:10]}): they do not name the exact code" if dirty else ""))


def _speed(name: str, row: LeaderboardRow, recs: list[RunRecord], where: str) -> Measurement:
    """A speed value read exactly as the leaderboard reads it: the band over interleaved timing rounds, widened by
    the measured run-to-run spread (`stats.widened`); the cell the leaderboard prints (`report.speedup_cell`, ≈1.00×
    when that band holds 1) is quoted beside it."""
    from slimbench.harness.report.build import speedup_cell

    if name == "speedup_bn_x":   # throughput at the suite's batch N (the papers' im/s at a large batch)
        speed, lo, hi = row.speedup_bn_x, row.speedup_bn_low, row.speedup_bn_high
        board = f"leaderboard batch {row.latency_batch or 'N'}"
    else:
        speed, lo, hi = row.speedup_b1_x, row.speedup_b1_low, row.speedup_b1_high
        board = "leaderboard"
    shown = speedup_cell(speed, lo, hi)
    if lo is None or hi is None:
        band, wlo, whi = f"{board} {shown}, no timing band", None, None
    else:
        wlo, whi = widened(lo, hi)
        band = f"{board} {shown}, widened ±{RUN_TO_RUN_SPEEDUP:.0%} run to run: {wlo:.2f}–{whi:.2f}"
    noise = "timing" if wlo is not None else "none"
    if name in ("speedup_b1_x", "speedup_bn_x"):
        return Measurement(speed, wlo, whi, f"({band}; {seeds_text(len(recs))})", where, noise=noise, seeds=len(recs))
    macs = mean([per_record("macs_x", r) for r in recs])
    low, high = (macs / whi, macs / wlo) if wlo is not None and whi is not None else (None, None)
    how = f"({macs:.2f}× fewer MACs ÷ {speed:.2f}× speedup; {band})"
    return Measurement(macs / speed, low, high, how, where, noise=noise, seeds=len(recs))


def single(name: str, row: LeaderboardRow, suite: SuiteData) -> Measurement:
    """One row's value (mean over its seeds) and the interval a verdict reads."""
    recs = row_records(row, suite)
    where = _where(suite, row, recs)
    if name in ROW_VALUES:
        return _speed(name, row, recs, where)
    vals = [per_record(name, r) for r in recs]
    value = mean(vals)
    if len(vals) == 1:
        return Measurement(value, where=where, seeds=1, **_one_seed(value, suite, row, name))
    spread = std(vals)
    if name in DELTA_VS_BASELINE or name == "delta_vs_teacher_pts":   # as the leaderboard: the paired Δ's spread,
        spread = max(spread, 100 * std([_reference_value(name, r) for r in recs]))   # or the reference's if wider
    return Measurement(value, value - spread, value + spread, f"± {spread:.2f} ({len(vals)} seeds)", where,
                       sigma=spread, seeds=len(vals))


def _reference_value(name: str, rec: RunRecord) -> float:
    """What a Δ is taken against: the baseline's accuracy or macro-F1, or the teacher's accuracy."""
    if name == "delta_vs_teacher_pts":
        return teacher_accuracy(rec)
    reference = record_figures(rec)[1]
    return reference.macro_f1 if name == "delta_macro_f1_pts" else reference.accuracy


def paired(a: list[float], b: list[float], suite: SuiteData, row: LeaderboardRow, noisy: bool = True
            ) -> tuple[float, dict[str, Any]]:
    """a − b seed by seed, with the pair's interval: the widest of the differences', a's and b's spread (the
    pair rule of the table), or ±2σ of the baseline's seeds for one seed."""
    diffs = [x - y for x, y in zip(a, b)]
    value = mean(diffs)
    if len(diffs) == 1:
        return value, _one_seed(value, suite, row, "accuracy_pts" if noisy else "compression_x")
    spread = max(std(diffs), std(a), std(b)) if noisy else std(diffs)
    return value, {"low": value - spread, "high": value + spread, "sigma": spread, "noise": "seeds",
                   "spread": f"± {spread:.2f} ({len(diffs)} seeds, paired)"}


def pair(claim: Claim, a: LeaderboardRow, b: LeaderboardRow, suite: SuiteData) -> Measurement | None:
    """A − B seed by seed; the spread is the widest of the differences', A's and B's (noisy values)."""
    spec = claim.records
    assert spec is not None and spec.versus is not None
    ra = {r.seed: r for r in row_records(a, suite)}
    rb = {r.seed: r for r in row_records(b, suite)}
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return None
    if spec.value == "agreement_minus_floor_pts":
        return _agreement_excess(a, ra, rb, seeds, suite)
    if spec.value in PAIRED_ONLY:
        return _worst_class_excess(a, ra, rb, seeds, suite)
    fa = [per_record(spec.value, ra[s]) for s in seeds]
    fb = [per_record(spec.value, rb[s]) for s in seeds]
    value, interval = paired(fa, fb, suite, a, spec.value in NOISY)
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs " + b.method
             + (f" ({short_params(b.params_given)})" if short_params(b.params_given) else "")
             + " · runs " + " ".join(rb[s].run_id for s in seeds))
    return Measurement(value, where=where, seeds=len(seeds), **interval)


def _excess(model: RunRecord, base: RunRecord) -> float | None:
    """How far the worst class's Δ falls below the overall Δ (points), model against base."""
    pm, pb = per_class(model), per_class(base)
    if pm is None or pb is None:
        return None
    return 100 * (float(np.nanmin(pm - pb)) - (record_figures(model)[0].accuracy - record_figures(base)[0].accuracy))


def _worst_class_excess(a: LeaderboardRow, ra: dict[int, RunRecord], rb: dict[int, RunRecord], seeds: list[int],
                        suite: SuiteData) -> Measurement | None:
    """The model's worst-class excess over its same-seed baseline, less the baseline's own seed-to-seed excess:
    the worst of several class Δs is below their mean even for two baseline seeds, and only the rest is
    compression's."""
    excesses = [_excess(ra[s], rb[s]) for s in seeds]
    churns = [_excess(rb[j], rb[i]) for i, j in permutations(sorted(rb), 2)]
    model = [v for v in excesses if v is not None]
    churn = [v for v in churns if v is not None]
    if len(model) < len(excesses) or len(churn) < len(churns) or not churn:
        return None
    value = mean(model) - mean(churn)
    spread = max(std(model), std(churn))
    how = (f"± {spread:.2f} (worst-class excess {mean(model):+.2f} over {seeds_text(len(seeds))}, less "
           f"{mean(churn):+.2f} between baseline seeds, {len(churn)} ordered pairs)")
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs baseline · runs "
             + " ".join(rb[s].run_id for s in sorted(rb)))
    return Measurement(value, value - spread, value + spread, how, where, sigma=spread, seeds=max(len(seeds), 2))


def _agreement_excess(a: LeaderboardRow, ra: dict[int, RunRecord], rb: dict[int, RunRecord], seeds: list[int],
                      suite: SuiteData) -> Measurement | None:
    """The model's attribution agreement with its same-seed baseline (Spearman ρ, in points) less the baseline's own
    agreement between two of its seeds: below 0, compression moved the attributions beyond what retraining moves
    them."""
    agreed = [e.agreement[INTEGRATED_GRADIENTS].spearman for s in seeds
              if (e := explained(ra[s])) is not None and e.agreement and INTEGRATED_GRADIENTS in e.agreement]
    bases = {s: explained(r) for s, r in rb.items()}
    floor = [p.spearman for p in seed_agreements({s: e for s, e in bases.items() if e is not None})]
    if len(agreed) < len(seeds) or not floor:
        return None
    value = 100 * (mean(agreed) - mean(floor))
    spread = 100 * max(std(agreed), std(floor))
    how = (f"± {spread:.2f} (ρ {mean(agreed):.3f} with the same-seed baseline over {seeds_text(len(seeds))}, less "
           f"{mean(floor):.3f} between baseline seeds, {len(floor)} pair{'s' * (len(floor) > 1)})")
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs baseline · runs "
             + " ".join(rb[s].run_id for s in sorted(rb)))
    return Measurement(value, value - spread, value + spread, how, where, sigma=spread, seeds=max(len(seeds), 2))


ROBUSTNESS_VALUES = ("corrupted_accuracy_pts", "corrupted_minus_clean_pts", "worst_class_excess_pts")
EXPLANATION_VALUES = ("faithfulness_pts", "agreement_minus_floor_pts")


def measured_by(name: str, row: LeaderboardRow, suite: SuiteData) -> bool:
    """Records measured before robustness or explanations were (or on a task without corruptions), and cells that
    did not train or whose baseline's epochs were never timed, cannot answer such a claim: their rows are left out,
    not failed."""
    recs = row_records(row, suite)
    if name in EXPLANATION_VALUES:
        return all(explained(r) is not None for r in recs)
    if name == "train_speedup_x":
        return all(timed(r) for r in recs)
    if name not in ROBUSTNESS_VALUES:
        return True
    return all(record_figures(r)[0].mean_corrupted_accuracy is not None for r in recs)


MANY_SEEDS = 100


def to_decide(m: Measurement, bound: float, unit: str) -> str:
    """What would decide an inconclusive row, from its measured spread."""
    if m.noise == "timing":
        if bound > 0 and abs(math.log(m.value / bound)) <= RUN_TO_RUN_SPEEDUP:
            return (f"; within the run-to-run spread (±{RUN_TO_RUN_SPEEDUP:.0%}) of {bound:.2f}×: no seeds or rounds "
                    f"decide it on this machine")
        return "; more timing rounds or a quieter machine could decide it; seeds do not narrow it"
    if m.sigma is None or m.noise not in ("seeds", "baseline"):
        return ""
    gap = abs(m.value - bound)
    if gap == 0:
        return "; the mean sits on the bound: no number of seeds decides it"
    if m.sigma == 0:
        return ""
    n = max(2, math.floor((m.sigma / gap) ** 2) + 1)
    if n > MANY_SEEDS:   # the mean sits so near the bound that the estimate only says "far too many"
        return (f"; the mean is within σ/{math.isqrt(MANY_SEEDS)} of the bound: more than {MANY_SEEDS} seeds would "
                f"decide it")
    shown = f"{bound:.3g}×" if unit == "×" else f"{bound:+.3g} {unit}".rstrip()
    return f"; about {n} seeds would decide it (σ/√n clears {shown} at σ = {m.sigma:.2f})"
