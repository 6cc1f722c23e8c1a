"""Published claims beside our measurements: `slimbench replicate` → results/replication.md.

Each suite folder with a runs/ folder under the results root is read; its records become leaderboard rows
(`leaderboard_rows`, the same rows as the leaderboard). Each claim of configs/claims.yaml is measured on the rows it
selects in the suites it names (and no other), or on the model built at the paper's input size (architecture
claims), or is marked as needing data and/or a GPU this machine does not have. Before a row is judged its premises
are checked (compute kernels, a stronger teacher, a model above chance, a PTQ loss to recover, something
compressed); a row without one is "not testable here", naming it. Intervals follow the leaderboard's noise model:
seeds' spread for accuracy, the round band widened by the run-to-run spread (`stats.widened`, the reading that
prints ≈1.00×) for speed. Rules and verdicts live in harness/replicate/claims.py; this module measures and renders: a summary
line per claim (its overall verdict, `claim_verdict`, and its best-supported row, `best_supported`), then each
claim's section, its text, source, published figure and rule said once above its rows. The counts that head the file
are `summary_sentence`'s, which `slimbench replicate` prints too. The output has no timestamps, so the same records
give the same bytes.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from itertools import permutations
from typing import Any

import numpy as np

from slimbench.core.errors import SlimbenchError
from slimbench.harness.measure.figures import Metrics, Reference
from slimbench.harness.replicate.claim_schema import Claim, Selector
from slimbench.harness.replicate.claim_terms import (AT_LEAST_CAP, CLOSE_TO_CAP, COMPUTE_REQUIREMENTS,
                                                     DELTA_VS_BASELINE, INCONCLUSIVE, NEEDS_DATA, NEEDS_DATA_AND_GPU,
                                                     NEEDS_GPU, NOISY, NOT_MEASURED, NOT_REPRODUCED, NOT_TESTABLE,
                                                     PAIRED_ONLY, REPRODUCED, SMALLER)
from slimbench.harness.replicate.claim_text import fmt, num, published_text, rule_text, span
from slimbench.harness.replicate.claims import Judgement, combine, judge, judge_loss, side
from slimbench.harness.replicate.claims_file import load_claims
from slimbench.harness.run.records import RunRecord, atomic_write_text, load_records
from slimbench.harness.report.robustness import per_class
from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.report.stats import RUN_TO_RUN_SPEEDUP, mean, short_params, std, widened

__all__ = ["load_claims", "replicate", "replication_markdown", "evaluate", "load_suites", "SuiteData", "markdown",
           "summary_sentence", "verdict_counts", "claim_counts", "claim_verdict", "best_supported"]


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


@dataclass
class Line:
    """One row of the table: a claim measured in one place (or not measured, with the command that would)."""

    claim: Claim
    measured: str
    where: str
    verdict: str
    reason: str
    # the numbers the summary reads (none for a claim not measured here)
    value: float | None = None
    low: float | None = None
    high: float | None = None
    seeds: int = 0
    noise: str = "none"
    why: str = ""                    # the reason, short: the main rule's finding (and a failing condition)


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

def _per_record(name: str, rec: RunRecord) -> float:
    m, r = _figures(rec)
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
        return 100 * (m.accuracy - _teacher_accuracy(rec))
    raise ValueError(name)


def _figures(rec: RunRecord) -> tuple[Metrics, Reference]:
    """The model's and its baseline's figures (every record behind a leaderboard row has both)."""
    if rec.metrics is None or rec.reference is None:
        raise SlimbenchError(f"run record {rec.run_id} ({rec.status}) was never measured")
    return rec.metrics, rec.reference


def _teacher_accuracy(rec: RunRecord) -> float:
    teacher = rec.details.get("teacher_accuracy")
    if not isinstance(teacher, (int, float)):
        raise SlimbenchError(f"run record {rec.run_id} names no teacher accuracy (details.teacher_accuracy)")
    return float(teacher)


def _matches(row: LeaderboardRow, method: str, params: dict[str, Any], task: str = "*", model: str = "*") -> bool:
    if not all(fnmatch.fnmatchcase(value, pat) for value, pat in
               ((row.method, method), (row.task, task), (row.model, model))):
        return False
    given = json.loads(row.params_json)
    return all(given.get(k) == v for k, v in params.items())


def _excluded(row: LeaderboardRow, exclude: dict[str, Any]) -> bool:
    """A row whose params hold every `exclude_params` entry is left out (the sparsity-0 fine-tune control)."""
    if not exclude:
        return False
    given = json.loads(row.params_json)
    return all(k in given and given[k] == v for k, v in exclude.items())


def _recs(row: LeaderboardRow, suite: SuiteData) -> list[RunRecord]:
    return [suite.records[i] for i in row.run_ids.split() if i in suite.records]


def _baseline_sigma(suite: SuiteData, row: LeaderboardRow, metric: str) -> tuple[float, int]:
    """σ (points) of the same task × model baseline's seeds: a one-seed row is judged against it (2σ), as in the
    leaderboard."""
    rows = [r for r in suite.rows if r.method == "baseline" and r.task == row.task and r.model == row.model]
    if not rows:
        return 0.0, 0
    recs = _recs(max(rows, key=lambda r: len(r.seeds.split())), suite)
    return 100 * std([getattr(_figures(r)[0], metric) for r in recs]), len(recs)


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


def _seeds(n: int) -> str:
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

    speed, lo, hi = row.speedup_b1_x, row.speedup_b1_low, row.speedup_b1_high
    shown = speedup_cell(speed, lo, hi)
    if lo is None or hi is None:
        band, wlo, whi = f"leaderboard {shown}, no timing band", None, None
    else:
        wlo, whi = widened(lo, hi)
        band = f"leaderboard {shown}, widened ±{RUN_TO_RUN_SPEEDUP:.0%} run to run: {wlo:.2f}–{whi:.2f}"
    noise = "timing" if wlo is not None else "none"
    if name == "speedup_b1_x":
        return Measurement(speed, wlo, whi, f"({band}; {_seeds(len(recs))})", where, noise=noise, seeds=len(recs))
    macs = mean([_per_record("macs_x", r) for r in recs])
    low, high = (macs / whi, macs / wlo) if wlo is not None and whi is not None else (None, None)
    how = f"({macs:.2f}× fewer MACs ÷ {speed:.2f}× speedup; {band})"
    return Measurement(macs / speed, low, high, how, where, noise=noise, seeds=len(recs))


def _single(name: str, row: LeaderboardRow, suite: SuiteData) -> Measurement:
    """One row's value (mean over its seeds) and the interval a verdict reads."""
    recs = _recs(row, suite)
    where = _where(suite, row, recs)
    if name in ("speedup_b1_x", "macs_x_over_speedup_b1"):
        return _speed(name, row, recs, where)
    vals = [_per_record(name, r) for r in recs]
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
        return _teacher_accuracy(rec)
    reference = _figures(rec)[1]
    return reference.macro_f1 if name == "delta_macro_f1_pts" else reference.accuracy


def _paired(a: list[float], b: list[float], suite: SuiteData, row: LeaderboardRow, noisy: bool = True
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


def _pair(claim: Claim, a: LeaderboardRow, b: LeaderboardRow, suite: SuiteData) -> Measurement | None:
    """A − B seed by seed; the spread is the widest of the differences', A's and B's (noisy values)."""
    spec = claim.records
    assert spec is not None and spec.versus is not None
    ra = {r.seed: r for r in _recs(a, suite)}
    rb = {r.seed: r for r in _recs(b, suite)}
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return None
    if spec.value in PAIRED_ONLY:
        return _worst_class_excess(a, ra, rb, seeds, suite)
    fa = [_per_record(spec.value, ra[s]) for s in seeds]
    fb = [_per_record(spec.value, rb[s]) for s in seeds]
    value, interval = _paired(fa, fb, suite, a, spec.value in NOISY)
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs " + b.method
             + (f" ({short_params(b.params_given)})" if short_params(b.params_given) else "")
             + " · runs " + " ".join(rb[s].run_id for s in seeds))
    return Measurement(value, where=where, seeds=len(seeds), **interval)


def _excess(model: RunRecord, base: RunRecord) -> float | None:
    """How far the worst class's Δ falls below the overall Δ (points), model against base."""
    pm, pb = per_class(model), per_class(base)
    if pm is None or pb is None:
        return None
    return 100 * (float(np.nanmin(pm - pb)) - (_figures(model)[0].accuracy - _figures(base)[0].accuracy))


def _worst_class_excess(a: LeaderboardRow, ra: dict[int, RunRecord], rb: dict[int, RunRecord], seeds: list[int],
                        suite: SuiteData) -> Measurement | None:
    """The model's worst-class excess over its same-seed baseline, less the baseline's own seed-to-seed excess:
    the worst of several class Δs is below their mean even for two baseline seeds, and only the rest is
    compression's."""
    model = [_excess(ra[s], rb[s]) for s in seeds]
    churn = [_excess(rb[j], rb[i]) for i, j in permutations(sorted(rb), 2)]
    if any(v is None for v in model + churn) or not churn:
        return None
    value = mean(model) - mean(churn)
    spread = max(std(model), std(churn))
    how = (f"± {spread:.2f} (worst-class excess {mean(model):+.2f} over {_seeds(len(seeds))}, less "
           f"{mean(churn):+.2f} between baseline seeds, {len(churn)} ordered pairs)")
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs baseline · runs "
             + " ".join(rb[s].run_id for s in sorted(rb)))
    return Measurement(value, value - spread, value + spread, how, where, sigma=spread, seeds=max(len(seeds), 2))


ROBUSTNESS_VALUES = ("corrupted_accuracy_pts", "corrupted_minus_clean_pts", "worst_class_excess_pts")


def _measured_by(name: str, row: LeaderboardRow, suite: SuiteData) -> bool:
    """Records measured before robustness was (or on a task without corruptions) cannot answer a robustness claim:
    their rows are left out, not failed."""
    if name not in ROBUSTNESS_VALUES:
        return True
    return all(_figures(r)[0].mean_corrupted_accuracy is not None for r in _recs(row, suite))


# -- premises: checked before a row is judged -----------------------------------------------------------------------

def _chance(rec: RunRecord) -> float | None:
    """Chance accuracy (points) of the record's task: 100 / its number of classes."""
    classes = (rec.details.get("task") or {}).get("num_classes")
    if not isinstance(classes, int):
        robust = rec.metrics.robustness if rec.metrics is not None else None
        classes = len(robust.classes) if robust is not None and robust.classes else None
    return 100 / classes if classes else None


def _at_chance(label: str, accuracies: list[float], recs: list[RunRecord], margin: float) -> str | None:
    """A model within `margin` points of chance, in words; None when it is clear of chance."""
    chance = _chance(recs[0])
    if chance is None:
        return f"the records of {label} name no class count: chance is unknown"
    acc = 100 * mean(accuracies)
    if acc - chance <= margin:
        return (f"model at chance: {label} {acc:.2f} % is within {margin:g} pts of chance ({chance:.2f} % for "
                f"{100 / chance:.0f} classes)")
    return None


def _compute_premise(want: str, recs: list[RunRecord]) -> str | None:
    """The measured compute labels of a row's records must show the kernels the claim needs."""
    labels = sorted({(r.compression.compute if r.compression else "") or "unlabelled" for r in recs})
    ok = COMPUTE_REQUIREMENTS[want]
    if all(any(part in ok for part in label.split("+")) for label in labels):
        return None
    shown = "/".join(labels)
    if want == "physical-sparse":
        what = ("masked dense kernels" if any("masked" in lab for lab in labels) else "dense kernels")
        return (f"{what} (measured compute {shown}): the pruned weights are still multiplied, so no sparse or "
                f"smaller kernel runs whose speed the claim is about")
    if want == "smaller-dense":
        return f"no smaller kernel (measured compute {shown}): the runtime executes as many multiply-adds"
    return f"no int8 kernels (measured compute {shown})"


def _teacher_premise(row: LeaderboardRow, recs: list[RunRecord], suite: SuiteData) -> str | None:
    """The teacher's accuracy interval must lie above the student-alone's, and the teacher must not be the
    student's own architecture (born-again)."""
    teachers = [r.details.get("teacher") for r in recs]
    if any(not isinstance(r.details.get("teacher_accuracy"), (int, float)) for r in recs):
        return "the records name no teacher accuracy"
    student = {"name": recs[0].model, "params": recs[0].config.get("model", {}).get("params", {})}
    if all(isinstance(t, dict) and t.get("model") == student for t in teachers):
        return (f"born-again: the teacher is the student's own architecture ({recs[0].model}), not a stronger "
                f"network")
    teacher = [100 * _teacher_accuracy(r) for r in recs]
    alone = [100 * _figures(r)[1].accuracy for r in recs]
    value, iv = _paired(teacher, alone, suite, row)
    said = (f"teacher {mean(teacher):.2f} vs student alone {mean(alone):.2f}, {value:+.2f} pts "
            f"{iv['spread']}")
    if iv["low"] is None:
        return f"teacher not shown stronger than the student alone: {said}"
    if side(iv["low"], iv["high"], 0.0, +1, strict=True) != "holds":
        return f"teacher not stronger than the student alone beyond the spread: {said}"
    return None


def _ptq_premise(b: LeaderboardRow, suite: SuiteData) -> str | None:
    """QAT recovers what PTQ lost: PTQ (the versus row) must lose accuracy beyond the spread."""
    lost = _single("delta_accuracy_pts", b, suite)
    if lost.low is None or lost.high is None or side(lost.low, lost.high, 0.0, -1, strict=True) != "holds":
        return (f"PTQ lost nothing to recover: {b.method} Δ {lost.value:+.2f} pts {lost.spread} is not below 0 "
                f"beyond the spread")
    return None


def _compressed_premise(recs: list[RunRecord], least: float) -> str | None:
    """Something was compressed: the share of the baseline's non-zero parameters removed."""
    removed = 1 - mean([m.nonzero_params / r.nonzero_params for m, r in map(_figures, recs)])
    if removed < least:
        return (f"nothing compressed: {100 * removed:.2f} % of the baseline's non-zero parameters removed (premise: "
                f"≥ {100 * least:g} %)")
    return None


def _premises(claim: Claim, m: Measurement, a: LeaderboardRow, b: LeaderboardRow | None, suite: SuiteData) -> None:
    """Absent premises, in words, onto the measurement (the row is then "not testable here")."""
    spec = claim.records
    assert spec is not None
    ra = _recs(a, suite)
    req = claim.requires
    if req is not None and req.compute:
        m.not_testable.append(_compute_premise(req.compute, ra) or "")
    if req is not None and req.teacher_stronger:
        m.not_testable.append(_teacher_premise(a, ra, suite) or "")
    if req is not None and req.ptq_lost and b is not None:
        m.not_testable.append(_ptq_premise(b, suite) or "")
    if claim.min_compressed_fraction is not None:
        m.not_testable.append(_compressed_premise(ra, claim.min_compressed_fraction) or "")
    if claim.min_accuracy_over_chance is not None:
        # the row's model and the baseline it was made from; a versus row other than the baseline may sit at chance
        # (random pruning collapsing at 95 % is what "magnitude beats random" measures there)
        margin = claim.min_accuracy_over_chance
        compared = [(a.method, [_figures(r)[0].accuracy for r in ra], ra),
                    ("its baseline", [_figures(r)[1].accuracy for r in ra], ra)]
        m.not_testable.extend(_at_chance(label, accs, recs, margin) or "" for label, accs, recs in compared)
    m.not_testable = [t for t in m.not_testable if t]


def _conditions(claim: Claim, m: Measurement, a: LeaderboardRow, suite: SuiteData) -> None:
    """Second figures the claim states beside its main one, each judged on its own interval."""
    spec = claim.records
    assert spec is not None
    recs = _recs(a, suite)
    if spec.value == "connections_x":   # the stored size beside the paper's measure: shown, never judged
        m.beside.append(f"stored {mean([_per_record('compression_x', r) for r in recs]):.2f}× smaller (not the "
                        f"paper's measure, not judged)")
    if claim.condition is not None:
        cond = claim.condition
        acc = _single(cond.value, a, suite)
        what = "accuracy" if cond.value == "delta_accuracy_pts" else "macro-F1"
        m.beside.append(f"Δ {what} {acc.value:+.2f} pts {acc.spread}")
        j = (judge_loss(acc.value, acc.low, acc.high, cond.bound) if acc.low is not None and acc.high is not None
             else Judgement(INCONCLUSIVE, f"Δ {acc.value:+.2f} pts from one seed with no measured spread"))
        if j.verdict == INCONCLUSIVE and j.bound is not None:
            j.reason += _to_decide(acc, j.bound, "pts")
        m.conditions.append((f"condition {what} loss ≤ {cond.bound:g} pts", j))   # its source: the claim's section
    if spec.teacher_not_below:
        teacher = [100 * _teacher_accuracy(r) for r in recs]
        distilled = [100 * _figures(r)[0].accuracy for r in recs]
        alone = [100 * _figures(r)[1].accuracy for r in recs]
        m.beside.append(f"teacher {mean(teacher):.2f}, alone {mean(alone):.2f}, distilled {mean(distilled):.2f}")
        value, iv = _paired(teacher, distilled, suite, a)
        said = f"teacher − distilled {value:+.2f} pts {iv['spread']}"
        if iv["low"] is None:
            j = Judgement(INCONCLUSIVE, f"{said}: no spread to tell it from noise")
        else:
            where = side(iv["low"], iv["high"], 0.0, +1, strict=False)
            j = {"holds": Judgement(REPRODUCED, f"{said}: teacher ≥ distilled"),
                 "fails": Judgement(NOT_REPRODUCED, f"{said}: the teacher is below the student it taught, beyond the "
                                                    f"spread: the ordering is broken"),
                 "across": Judgement(INCONCLUSIVE, f"{said}: across 0", 0.0)}[where]
        m.conditions.append(("teacher ≥ distilled", j))


MANY_SEEDS = 100


def _to_decide(m: Measurement, bound: float, unit: str) -> str:
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
        return f"; the mean is within σ/{math.isqrt(MANY_SEEDS)} of the bound: more than {MANY_SEEDS} seeds would decide it"
    shown = f"{bound:.3g}×" if unit == "×" else f"{bound:+.3g} {unit}".rstrip()
    return f"; about {n} seeds would decide it (σ/√n clears {shown} at σ = {m.sigma:.2f})"


def _rows(claim: Claim, suite: SuiteData) -> list[Measurement]:
    spec = claim.records
    assert spec is not None
    sel: Selector = spec.where
    out = []
    for a in (r for r in suite.rows if _matches(r, sel.method, sel.params, sel.task, sel.model)):
        if not _measured_by(spec.value, a, suite) or _excluded(a, claim.exclude_params):
            continue
        if spec.versus is None:
            m = _single(spec.value, a, suite)
            _premises(claim, m, a, None, suite)
            _conditions(claim, m, a, suite)
            out.append(m)
            continue
        va = json.loads(a.params_json)
        for b in suite.rows:
            same = all(json.loads(b.params_json).get(k) == va.get(k) for k in spec.versus.same_params)
            if b is not a and (b.task, b.model) == (a.task, a.model) and same and \
                    _matches(b, spec.versus.method, spec.versus.params) and _measured_by(spec.value, b, suite) \
                    and not _excluded(b, claim.exclude_params):
                m = _pair(claim, a, b, suite)
                if m is not None:
                    _premises(claim, m, a, b, suite)
                    _conditions(claim, m, a, suite)
                    out.append(m)
    return out


# -- architecture counts, measured now ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _count(model: str, params_json: str, shape: tuple[int, int, int], classes: int, what: str) -> int:
    import torch

    from slimbench.baselines import build_model
    from slimbench.deploy.counting import count_macs, count_params
    from slimbench.tasks import InputSpec

    built = build_model(model, InputSpec(*shape), classes, json.loads(params_json) or None)
    if what == "params":
        return count_params(built)[0]
    return count_macs(built, torch.zeros(1, *shape))


def _arch(claim: Claim) -> Measurement:
    a = claim.arch
    assert a is not None
    c, h, w = a.input
    n = _count(a.model, json.dumps(a.params, sort_keys=True), (c, h, w), a.classes, a.count)
    what = "parameters" if a.count == "params" else "multiply-adds"
    where = (f"measured now on the model built at {h}² ({c}×{h}×{w} input, {a.classes} classes): "
             + _model_text(a.model, a.params))
    if a.over is not None:
        d = _count(a.over["model"], json.dumps(a.over.get("params", {}), sort_keys=True), (c, h, w), a.classes,
                   a.count)
        where += " ÷ " + _model_text(a.over["model"], a.over.get("params", {}))
        return Measurement(n / d, n / d, n / d, f"({n:,} ÷ {d:,} {what})", where, noise="exact")
    value = a.ratio_of / n if a.ratio_of is not None else n / a.divide_by
    if a.ratio_of is not None:
        where = f"{a.ratio_text} ÷ our count, {where}"
    return Measurement(value, value, value, f"({n:,} {what})", where, noise="exact")


def _model_text(model: str, params: dict[str, Any]) -> str:
    given = short_params(json.dumps(params))
    return model + (f" ({given})" if given else "")


# -- the table ------------------------------------------------------------------------------------------------------

def _command(claim: Claim) -> str:
    return " or ".join(f"`slimbench run configs/{s}.yaml`" for s in claim.suites)


def verdict(claim: Claim, m: Measurement) -> Judgement:
    """A measured row's verdict: an absent premise first (not testable here, naming it), then the rule on the whole
    interval, then the claim's second conditions; an inconclusive row says what would decide it."""
    if m.not_testable:
        return Judgement(NOT_TESTABLE, "; ".join(m.not_testable))
    main = judge(claim, m.value, m.low, m.high)
    if main.verdict == INCONCLUSIVE and main.bound is not None:
        main.reason += _to_decide(m, main.bound, claim.published.unit)
    return combine(main, m.conditions)


def evaluate(claims: list[Claim], suites: list[SuiteData]) -> list[Line]:
    """Every claim, in file order: one line per place it is measured in the suites it names, or one saying why
    it is not."""
    lines: list[Line] = []
    for claim in claims:
        if claim.kind == "arch":
            found = [_arch(claim)]
        elif claim.records is not None:
            found = [m for s in suites if s.name in claim.suites for m in _rows(claim, s)]
        else:
            found = []
        for m in found:
            j = verdict(claim, m)
            measured = " · ".join([f"{fmt(m.value, claim.published.unit)}{_value_word(claim)} {m.spread}", *m.beside])
            lines.append(Line(claim, measured, m.where, j.verdict, j.reason, m.value, m.low, m.high, m.seeds,
                              m.noise, _why(claim, m)))
        if found:
            continue
        if claim.kind == "full-scale":
            assert claim.needs is not None
            lines.append(Line(claim, "—", f"not run here: needs {claim.needs.text}", claim.needs.verdict,
                              f"measure it with {claim.command}", why=f"measure it with {claim.command}"))
        else:
            lines.append(Line(claim, "—", "no record in the suites it names (" + ", ".join(claim.suites) + ") yet",
                              NOT_MEASURED, f"run {_command(claim)}", why=f"run {_command(claim)}"))
    return lines


def _why(claim: Claim, m: Measurement) -> str:
    """The reason, short (the summary's cell): the first absent premise, or the main rule's finding on the interval,
    with any second condition that did not hold; the detail row keeps the whole reason."""
    if m.not_testable:
        more = len(m.not_testable) - 1
        return m.not_testable[0] + (f" (and {more} more premise{'s' * (more > 1)} absent)" if more else "")
    why = judge(claim, m.value, m.low, m.high).reason
    failed = [f"{name}: {j.verdict}" for name, j in m.conditions if j.verdict != REPRODUCED]
    return why + (f"; but {'; '.join(failed)}" if failed else "")


def _value_word(claim: Claim) -> str:
    """What a ratio counts, where the unit alone does not say it (the paper's own measure)."""
    spec = claim.records
    words = {"connections_x": " fewer connections", "compression_x": " smaller stored", "gzip_x": " smaller gzipped",
             "macs_x": " fewer MACs"}
    return words.get(spec.value, "") if spec is not None else ""


ORDER = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED, NOT_TESTABLE, NEEDS_DATA, NEEDS_GPU, NEEDS_DATA_AND_GPU,
         NOT_MEASURED)
JUDGED = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED)   # what the claim's rule says of a measured row
MIXED = "mixed"                # a claim whose judged rows disagree (its cell gives the counts)
CLAIM_ORDER = (REPRODUCED, INCONCLUSIVE, SMALLER, NOT_REPRODUCED, MIXED, NOT_TESTABLE, NEEDS_DATA, NEEDS_GPU,
               NEEDS_DATA_AND_GPU, NOT_MEASURED)
SUMMARY_HEADERS = ["claim", "source", "published", "our best-supported value", "row it is from", "verdict", "why"]
DETAIL_HEADERS = ["where measured", "measured (spread, seeds)", "verdict: reason"]


def by_claim(lines: list[Line]) -> dict[str, list[Line]]:
    """Each claim's rows, claims in the order of their first row (the claims file's order)."""
    out: dict[str, list[Line]] = {}
    for line in lines:
        out.setdefault(line.claim.id, []).append(line)
    return out


def claim_verdict(rows: list[Line]) -> str:
    """A claim's overall verdict, from its rows (rows judged by the claim's rule: reproduced, inconclusive, same
    direction smaller effect, not reproduced):
    - the verdict every judged row has, when they agree (rows "not testable here" are counted in the cell, but do
      not decide it);
    - "mixed" when the judged rows disagree (the cell gives the count of each verdict);
    - "not testable here" when every row lacks a premise;
    - else the claim's one row's: needs data / needs GPU / needs data and GPU, or not measured."""
    judged = sorted({line.verdict for line in rows if line.verdict in JUDGED})
    if len(judged) == 1:
        return judged[0]
    if judged:
        return MIXED
    if all(line.verdict == NOT_TESTABLE for line in rows):
        return NOT_TESTABLE
    return rows[0].verdict


def best_supported(rows: list[Line]) -> Line:
    """The row a claim's summary quotes: a judged row before one not testable here, then the most seeds, then the
    narrowest interval (an exact count is 0 wide; a row with no interval comes last), then the first in file order."""
    def key(item: tuple[int, Line]) -> tuple[bool, int, float, int]:
        i, line = item
        width = line.high - line.low if line.low is not None and line.high is not None else math.inf
        return line.verdict not in JUDGED, -line.seeds, width, i

    return min(enumerate(rows), key=key)[1]


def verdict_counts(lines: list[Line]) -> dict[str, int]:
    """Rows per verdict, every verdict listed (0 where none), in the table's order."""
    return {v: sum(line.verdict == v for line in lines) for v in ORDER}


def claim_counts(lines: list[Line]) -> dict[str, int]:
    """Claims per overall verdict (`claim_verdict`), every one listed, in the table's order."""
    overall = [claim_verdict(rows) for rows in by_claim(lines).values()]
    return {v: overall.count(v) for v in CLAIM_ORDER}


def summary_sentence(lines: list[Line]) -> str:
    """The counts that head the file and that `slimbench replicate` prints: claims, rows, rows per verdict, claims
    per overall verdict (no final full stop)."""
    rows = ", ".join(f"{n} {v}" for v, n in verdict_counts(lines).items())
    claims = ", ".join(f"{n} {v}" for v, n in claim_counts(lines).items())
    return f"{len(by_claim(lines))} claims, {len(lines)} rows: {rows}; claims by overall verdict: {claims}"


def _counted(rows: list[Line]) -> str:
    return ", ".join(f"{n} {v}" for v, n in verdict_counts(rows).items() if n)


def _verdict_cell(rows: list[Line]) -> str:
    overall = claim_verdict(rows)
    if len(rows) == 1:
        return overall
    if len({line.verdict for line in rows}) == 1:
        return f"{overall} (all {len(rows)} rows)"
    return f"{overall} ({_counted(rows)})"


def _value_cell(line: Line) -> str:
    """The measured value with its interval, its seeds and where the interval comes from, short."""
    if line.value is None:
        return "—"
    unit = line.claim.published.unit
    shown = fmt(line.value, unit)
    if line.noise == "exact":
        return f"{shown} (exact count)"
    if line.low is None or line.high is None:
        return f"{shown} ({_seeds(line.seeds)}, no spread)"
    if line.low == line.high:
        return f"{shown} ({_seeds(line.seeds)}, the same in each)"
    interval = span(line.low, line.high, unit).removeprefix("interval ")
    how = {"timing": ", widened timing band", "baseline": ", ±2σ of its baseline's seeds"}.get(line.noise, "")
    return f"{shown} ({interval}, {_seeds(line.seeds)}{how})"


def _place(line: Line) -> str:
    """Which row the summary quotes, short: suite · task · model · method without run ids or a dirty-tree note (the
    claim's section keeps them); the model counted, for an architecture claim; — for a claim not measured here."""
    if line.value is None:
        return "—"
    if line.claim.kind == "arch":
        return "built now: " + line.where.rsplit(": ", 1)[-1]
    out: list[str] = []
    for part in line.where.split(" · "):
        if part.startswith("runs "):
            if " vs " in part and out:
                out[-1] += " vs " + part.split(" vs ", 1)[1]
        elif not part.startswith("⚠"):
            out.append(part)
    return " · ".join(out)


_YEAR = re.compile(r" (?:19|20)\d\d\b(?![.\d])")


def _short_source(source: str) -> str:
    """The source, short: up to its year when the year comes before any parenthesis or semicolon (authors and
    year), else up to the first comma, parenthesis or semicolon."""
    cuts = [i for i in (source.find(" ("), source.find("; ")) if i >= 0]
    year = _YEAR.search(source)
    if year and year.start() < min(cuts, default=len(source)):
        return source[:year.end()]
    cuts += [i for i in (source.find(", "),) if i >= 0]
    return source[:min(cuts, default=len(source))]


def _published_short(claim: Claim) -> str:
    """The published figure without the source's wording (the detail section quotes it)."""
    pub, rule = claim.published, claim.rule
    if pub.value is None:
        head = f"direction only ({'>' if rule.direction == 'higher' else '<'} {num(rule.no_effect or 0.0, pub.unit)})"
    elif rule.test == "loss_at_most":
        head = f"loss {num(pub.value, pub.unit)}"
    else:
        head = num(pub.value, pub.unit)
    if claim.condition is not None:
        cond = claim.condition.published
        head += f", loss ≤ {num(cond.value or 0.0, cond.unit)}"
    return head


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ").strip()


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub table with no padding: each row as wide as its own cells."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _slugger():
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -, a repeat numbered."""
    used: dict[str, int] = {}

    def slug(heading: str) -> str:
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = used.get(base, 0)
        used[base] = n + 1
        return base if n == 0 else f"{base}-{n}"

    return slug


def _details(claim: Claim, rows: list[Line]) -> list[str]:
    """A claim's section: what it says, its source, published figure, comparison and rule once, then its rows."""
    facts = [("Source", claim.source), ("Published", published_text(claim)), ("Comparison", claim.comparison),
             ("Rule", rule_text(claim))]
    if claim.records is not None and claim.kind != "arch":
        facts.append(("Reads suites", ", ".join(claim.suites) or "(none)"))
    if claim.premises:
        facts.append(("Premises", "; ".join(claim.premises)))
    if claim.condition is not None:
        facts.append(("Condition", f"accuracy loss at most {claim.condition.bound:g} pts over the whole interval "
                                   f"({claim.condition.published.text})"))
    facts.append(("Verdict", _verdict_cell(rows)))
    table, said = [], ""
    for line in rows:   # a reason the row above gave word for word is not printed twice
        judged = f"{line.verdict}: {line.reason}"
        table.append([line.where, line.measured, "as above" if judged == said else judged])
        said = judged
    return [f"### {claim.id}", "", _cell(claim.claim), "",
            *[f"- {name}: {_cell(text)}" for name, text in facts], "",
            *_table(DETAIL_HEADERS, table), ""]


TITLE = "Replication: published claims beside our measurements"
SUMMARY = "Summary: one line per claim"
DETAILS = "Details by claim"


def markdown(lines: list[Line], suites: list[SuiteData]) -> str:
    """One file: the header (counts, verdicts, rules), a summary line per claim, then each claim's section with
    its rows. No timestamps: the same records give the same bytes."""
    return markdown_parts(lines, suites, None)[0]


def markdown_parts(lines: list[Line], suites: list[SuiteData], details_file: str | None) -> tuple[str, str]:
    """(summary, details): with `details_file`, the claims' sections go to that file and the summary links there,
    so the page a person opens first stays short; without it, one text holding both (and "" as the second)."""
    read = ", ".join(f"`{s.name}` ({len(s.records)} records)" for s in suites) or "none"
    claims = by_claim(lines)
    slug = _slugger()
    for heading in ((TITLE, SUMMARY, DETAILS) if details_file is None else (DETAILS,)):
        slug(heading)
    anchors = {cid: slug(cid) for cid in claims}
    target = details_file or ""
    summary = []
    for cid, rows in claims.items():
        claim, best = rows[0].claim, best_supported(rows)
        summary.append([f"[{cid}]({target}#{anchors[cid]})", _short_source(claim.source), _published_short(claim),
                        _value_cell(best), _place(best), _verdict_cell(rows), best.why or best.reason])
    details = [text for rows in claims.values() for text in _details(rows[0].claim, rows)]
    if details_file is not None:
        detail_text = "\n".join([f"# {DETAILS}", "", f"Every row of every claim, grouped by claim: the detail behind "
                                 f"the summary in `replication.md` (built with it by `slimbench replicate`).", "",
                                 *details]) + "\n"
        details = [f"Every claim's section, with each row it read, is in [{details_file}]({details_file})."]
    else:
        detail_text = ""
    head = "\n".join([
        f"# {TITLE}", "",
        f"Built by `slimbench replicate` from `configs/claims.yaml` and the run records of the suites under the "
        f"results folder: {read}. Each claim reads only the suites it names. The same records give the same file, "
        f"byte for byte.", "",
        summary_sentence(lines) + ".", "",
        "Verdicts (harness/replicate/claims.py `judge`), each read on the whole measured interval, never the mean alone:",
        f"- **{REPRODUCED}**: the whole interval satisfies the claim's rule. Never from one seed without a measured "
        "spread.",
        f"- **{INCONCLUSIVE}**: the interval straddles the rule's bound; the row says what would decide it (the n "
        "at which σ/√n, the same σ assumed, clears the bound; or, for a timing band, whether the effect lies inside "
        "the run-to-run spread).",
        f"- **{SMALLER}**: the whole interval lies short of the published size and clear of no effect in the "
        "claimed direction (1.8× does not reproduce a claim of 9×). A speed the leaderboard reads as ≈1.00× is "
        "never a smaller effect.",
        f"- **{NOT_REPRODUCED}**: the whole interval lies on the failing side (a loss beyond the bound, no effect or "
        "the opposite one, outside a count's band), or a second condition of the claim broken.",
        f"- **{NOT_TESTABLE}**: a premise of the claim is absent (no sparse, smaller or int8 kernel; a teacher not "
        "stronger than the student alone; a model at chance; no PTQ loss to recover; nothing compressed); the row "
        "names it.",
        f"- **{NEEDS_DATA}** / **{NEEDS_GPU}** / **{NEEDS_DATA_AND_GPU}**: the setting needs a dataset this machine "
        "does not embed, a GPU, or both; the row gives the command that measures it.",
        f"- *{NOT_MEASURED}* (no verdict): no record in the suites the claim names; the row gives the command.", "",
        "Rules (checked when `configs/claims.yaml` loads; a rule looser than its claim is rejected; each claim's "
        "section gives its numbers):",
        "- close to: the whole interval within a stated tolerance of the published value plus half a unit of its "
        f"last printed digit (\"3.4 M\" is 3.35–3.45 M), together at most {CLOSE_TO_CAP:.0%} of the value;",
        "- at least: the whole interval reaches the published effect less a stated share of it and half its last "
        f"digit (together at most {AT_LEAST_CAP:.0%} of the effect over no effect: 1× for a ratio, 0 for a "
        "difference);",
        "- loss at most, symmetric: reproduced if the largest loss in the interval is within the published loss, "
        "not reproduced if the smallest is beyond it;",
        "- direction only: the whole interval lies on the claimed side of no effect.", "",
        "Intervals, the leaderboard's noise model: accuracy values are mean ± σ over seeds (a Δ against the "
        "baseline: the wider of the paired Δ's σ and the baseline's; a pair A − B: the widest of the differences', "
        "A's and B's); one seed of an accuracy value is judged against ±2σ of its baseline's seeds; sizes from one "
        "seed have no measured spread. Speedups read the band over interleaved timing rounds widened by the "
        f"run-to-run spread (±{RUN_TO_RUN_SPEEDUP:.0%}, `stats.widened`), the band whose holding 1 makes the "
        "leaderboard print ≈1.00×. Architecture counts are measured now, exactly, on the model built at the paper's "
        "input size and class count; every other value comes from the run records its row names. Our budgets "
        "(minutes of CPU training on embedded datasets) are far smaller than the papers'.", "",
        f"## {SUMMARY}", "",
        "A claim's verdict is the verdict every one of its judged rows (reproduced, inconclusive, same direction "
        f"smaller effect, not reproduced) has; **{MIXED}** when they disagree, with the count of each; "
        f"{NOT_TESTABLE} when no row meets the claim's premises; rows not testable here are counted beside it but "
        "do not decide it. The value quoted is the claim's best-supported row: a judged row before one not testable "
        "here, then the most seeds, then the narrowest interval, then the first. Why: that row's reason, short; "
        "the claim's section has every row in full.", "",
        *_table(SUMMARY_HEADERS, summary), "",
        f"## {DETAILS}", "",
        *details,
    ])
    return (head + "\n" if details_file is not None else head), detail_text


def replication_markdown(claims: list[Claim], rows: list[LeaderboardRow], records: list[RunRecord]) -> str:
    """The table for one suite's rows and records (the claims that name that suite)."""
    suite = SuiteData(records[0].suite if records else "suite", rows, {r.run_id: r for r in records})
    return markdown(evaluate(claims, [suite]), [suite])


def replicate(results: Path, out: Path | None = None, claims_path: Path | None = None) -> list[Line]:
    """Evaluate every claim on the suites it names under `results`; write the table atomically to `out`."""
    suites = load_suites(results)
    lines = evaluate(load_claims(claims_path), suites)
    out = Path(out or Path(results) / "replication.md")
    details_path = out.with_name(out.stem + "_details" + out.suffix)
    summary, details = markdown_parts(lines, suites, details_path.name)
    atomic_write_text(details_path, details)
    atomic_write_text(out, summary)
    return lines
