"""Published claims beside our measurements: `slimbench replicate` → results/replication.md.

Every suite folder with a runs/ folder under the results root is read; its records become leaderboard rows
(`leaderboard_rows`, the same rows as the leaderboard), and each claim of configs/claims.yaml is measured on the
rows it selects, or on the model built at the paper's input size (architecture claims), or is marked as needing
data or a GPU this machine does not have. Rules and caps live in harness/claims.py; this module measures and
renders. The output has no timestamps, so the same records give the same bytes.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from itertools import permutations
from typing import Any

import numpy as np
from tabulate import tabulate

from slimbench.core.errors import SlimbenchError
from slimbench.harness.claims import (AT_LEAST_CAP, CLOSE_TO_CAP, NEEDS_FULL_SCALE, NOISY, NOT_MEASURED,
                                      NOT_REPRODUCED, PAIRED_ONLY, REPRODUCED, SMALLER, Claim, Selector, fmt, judge,
                                      load_claims,
                                      published_text, rule_text)
from slimbench.harness.records import RunRecord, atomic_write_text, load_records
from slimbench.harness.robustness import per_class
from slimbench.harness.stats import mean, short_params, std

__all__ = ["load_claims", "replicate", "replication_markdown", "evaluate", "load_suites", "SuiteData"]


@dataclass
class SuiteData:
    """One suite's records and the leaderboard rows built from them."""

    name: str
    rows: list[dict[str, Any]]
    records: dict[str, RunRecord]


@dataclass
class Measurement:
    """A measured value, the interval a difference must clear, and where it comes from."""

    value: float
    low: float | None                # the interval a difference must clear; None: one seed, no spread to judge by
    high: float | None
    spread: str                      # how the interval was obtained
    where: str                       # traceable to records: suite · task · model · method · run_ids
    violations: list[str] = field(default_factory=list)


@dataclass
class Line:
    """One row of the table: a claim measured in one place (or not measured, with the command that would)."""

    claim: Claim
    measured: str
    where: str
    verdict: str
    reason: str


def load_suites(results: Path) -> list[SuiteData]:
    """Every suite folder under `results` that has runs/ (hidden folders, e.g. .reproduce, are scratch space)."""
    from slimbench.harness.report import leaderboard_rows

    suites = []
    for folder in sorted(p for p in Path(results).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / "runs").is_dir():
            records = load_records(folder / "runs")
            suites.append(SuiteData(folder.name, leaderboard_rows(records), {r.run_id: r for r in records}))
    return suites


# -- values read from records -------------------------------------------------------------------------------------

def _per_record(name: str, rec: RunRecord) -> float:
    m, r = rec.metrics, rec.reference
    if name == "compression_x":
        return r["stored_bytes"] / m["stored_bytes"]
    if name == "gzip_x":
        return r["gzip_bytes"] / m["gzip_bytes"]
    if name == "macs_x":
        return r["macs"] / m["macs"]
    if name == "accuracy_pts":
        return 100 * m["accuracy"]
    if name == "delta_accuracy_pts":
        return 100 * (m["accuracy"] - r["accuracy"])
    if name == "delta_macro_f1_pts":
        return 100 * (m["macro_f1"] - r["macro_f1"])
    if name in ("corrupted_accuracy_pts", "corrupted_minus_clean_pts"):
        corrupted = m.get("mean_corrupted_accuracy")
        if corrupted is None:
            raise SlimbenchError(f"run record {rec.run_id} has no corrupted-input accuracy (measured before "
                                 f"robustness was, or its task declares no corruptions): rerun its suite")
        return 100 * (corrupted - (m["accuracy"] if name == "corrupted_minus_clean_pts" else 0.0))
    if name == "delta_vs_teacher_pts":
        teacher = rec.details.get("teacher_accuracy")
        if not isinstance(teacher, (int, float)):
            raise SlimbenchError(f"run record {rec.run_id} names no teacher accuracy (details.teacher_accuracy)")
        return 100 * (m["accuracy"] - teacher)
    raise ValueError(name)


def _matches(row: dict[str, Any], method: str, params: dict[str, Any], task: str = "*", model: str = "*") -> bool:
    if not all(fnmatch.fnmatchcase(str(row[k]), pat) for k, pat in
               (("method", method), ("task", task), ("model", model))):
        return False
    given = json.loads(row["params_json"])
    return all(given.get(k) == v for k, v in params.items())


def _recs(row: dict[str, Any], suite: SuiteData) -> list[RunRecord]:
    return [suite.records[i] for i in row["run_ids"].split() if i in suite.records]


def _baseline_sigma(suite: SuiteData, row: dict[str, Any], metric: str) -> tuple[float, int]:
    """σ (points) of the same task × model baseline's seeds: a one-seed row is judged against it (2σ), as in the
    leaderboard."""
    rows = [r for r in suite.rows if r["method"] == "baseline" and r["task"] == row["task"]
            and r["model"] == row["model"]]
    if not rows:
        return 0.0, 0
    recs = _recs(max(rows, key=lambda r: len(r["seeds"].split())), suite)
    return 100 * std([r.metrics[metric] for r in recs]), len(recs)


def _one_seed_interval(value: float, suite: SuiteData, row: dict[str, Any], name: str
                       ) -> tuple[float | None, float | None, str]:
    if name not in NOISY:
        return value, value, "(1 seed)"
    metric = ("macro_f1" if name == "delta_macro_f1_pts" else
              "mean_corrupted_accuracy" if name.startswith("corrupted_") else "accuracy")
    sigma, n = _baseline_sigma(suite, row, metric)
    if n < 2:
        return None, None, "(1 seed; its baseline has 1 seed: no spread)"
    return value - 2 * sigma, value + 2 * sigma, f"± {2 * sigma:.2f} (1 seed: 2σ of its baseline's {n} seeds)"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _where(suite: SuiteData, row: dict[str, Any], recs: list[RunRecord]) -> str:
    given = short_params(row["_params_given"])
    dirty = [r for r in recs if r.git.get("dirty")]
    return (f"{suite.name} · {row['task']} · {row['model']} · {row['method']}" + (f" ({given})" if given else "")
            + " · runs " + " ".join(r.run_id for r in recs)
            + (f" · ⚠ {len(dirty)} of {len(recs)} records from a dirty tree (commit "
               f"{(dirty[0].git.get('commit') or '?')[:10]}): they do not name the exact code" if dirty else ""))


def _single(name: str, row: dict[str, Any], suite: SuiteData, teacher_not_below: bool = False) -> Measurement:
    """One row's value (mean over its seeds) and the interval a difference must clear."""
    recs = _recs(row, suite)
    where = _where(suite, row, recs)
    if name in ("speedup_b1_x", "macs_x_over_speedup_b1"):
        speed, lo, hi = row["speedup_b1_x"], row["speedup_b1_low"], row["speedup_b1_high"]
        band = f"band {lo:.2f}–{hi:.2f} over timing rounds" if lo is not None else "no timing band"
        if name == "speedup_b1_x":
            return Measurement(speed, lo, hi, f"({band}, {_seeds(len(recs))})", where)
        macs = mean([_per_record("macs_x", r) for r in recs])
        low, high = (macs / hi, macs / lo) if lo is not None else (None, None)
        how = f"({macs:.2f}× fewer MACs ÷ {speed:.2f}× speedup, {band})"
        return Measurement(macs / speed, low, high, how, where)
    vals = [_per_record(name, r) for r in recs]
    value = mean(vals)
    if len(vals) == 1:
        low, high, how = _one_seed_interval(value, suite, row, name)
    else:
        spread = std(vals)
        if name.startswith("delta_"):   # as the leaderboard: the paired Δ's spread, or the reference's if wider
            spread = max(spread, 100 * std([_reference_value(name, r) for r in recs]))
        low, high, how = value - spread, value + spread, f"± {spread:.2f} ({len(vals)} seeds)"
    m = Measurement(value, low, high, how, where)
    if teacher_not_below:
        _teacher_check(m, recs)
    return m


def _reference_value(name: str, rec: RunRecord) -> float:
    """What a Δ is taken against: the baseline's accuracy or macro-F1, or the teacher's accuracy."""
    if name == "delta_vs_teacher_pts":
        return rec.details["teacher_accuracy"]
    return rec.reference["macro_f1" if name == "delta_macro_f1_pts" else "accuracy"]


def _teacher_check(m: Measurement, recs: list[RunRecord]) -> None:
    """Hinton's ordering has a second half: the teacher is not below the student it taught."""
    teachers = [r.details.get("teacher_accuracy") for r in recs]
    if any(not isinstance(t, (int, float)) for t in teachers):
        m.violations.append("the records name no teacher accuracy")
        return
    teacher, distilled = 100 * mean(teachers), 100 * mean([r.metrics["accuracy"] for r in recs])
    alone = 100 * mean([r.reference["accuracy"] for r in recs])
    m.spread += f"; teacher {teacher:.2f}, alone {alone:.2f}, distilled {distilled:.2f}"
    if teacher < distilled:
        m.violations.append(f"teacher {teacher:.2f} < distilled {distilled:.2f}: the ordering is broken")


def _pair(claim: Claim, a: dict[str, Any], b: dict[str, Any], suite: SuiteData) -> Measurement | None:
    """A − B seed by seed; the spread is the widest of the differences', A's and B's (noisy values)."""
    spec = claim.records
    assert spec is not None and spec.versus is not None
    ra = {r.seed: r for r in _recs(a, suite)}
    rb = {r.seed: r for r in _recs(b, suite)}
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return None
    if spec.value in PAIRED_ONLY:
        return _worst_class_excess(a, ra, rb, seeds, suite, b)
    fa = [_per_record(spec.value, ra[s]) for s in seeds]
    fb = [_per_record(spec.value, rb[s]) for s in seeds]
    diffs = [x - y for x, y in zip(fa, fb)]
    value = mean(diffs)
    if len(seeds) == 1:
        low, high, how = _one_seed_interval(value, suite, a, spec.value)
    else:
        spread = max(std(diffs), std(fa), std(fb)) if spec.value in NOISY else std(diffs)
        low, high, how = value - spread, value + spread, f"± {spread:.2f} ({len(seeds)} seeds, paired)"
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs " + b["method"]
             + (f" ({short_params(b['_params_given'])})" if short_params(b["_params_given"]) else "")
             + " · runs " + " ".join(rb[s].run_id for s in seeds))
    m = Measurement(value, low, high, how, where)
    if spec.premise == "versus_loses_accuracy":
        lost = _single("delta_accuracy_pts", b, suite)
        if lost.high is None or lost.high >= 0:
            m.violations.append(f"premise absent: {b['method']} loses no accuracy beyond the spread here, "
                                f"Δ {lost.value:+.2f} pts {lost.spread}: nothing to recover")
    return m


def _excess(model: RunRecord, base: RunRecord) -> float | None:
    """How far the worst class's Δ falls below the overall Δ (points), model against base."""
    pm, pb = per_class(model), per_class(base)
    if pm is None or pb is None:
        return None
    return 100 * (float(np.nanmin(pm - pb)) - (model.metrics["accuracy"] - base.metrics["accuracy"]))


def _worst_class_excess(a: dict[str, Any], ra: dict[int, RunRecord], rb: dict[int, RunRecord], seeds: list[int],
                        suite: SuiteData, b: dict[str, Any]) -> Measurement | None:
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
    where = (_where(suite, a, [ra[s] for s in seeds]) + " vs baseline · runs " + " ".join(rb[s].run_id for s in sorted(rb)))
    return Measurement(value, value - spread, value + spread, how, where)


ROBUSTNESS_VALUES = ("corrupted_accuracy_pts", "corrupted_minus_clean_pts", "worst_class_excess_pts")


def _measured_by(name: str, row: dict[str, Any], suite: SuiteData) -> bool:
    """Records measured before robustness was (or on a task without corruptions) cannot answer a robustness claim:
    their rows are left out, not failed."""
    if name not in ROBUSTNESS_VALUES:
        return True
    return all(r.metrics.get("mean_corrupted_accuracy") is not None for r in _recs(row, suite))


def _rows(claim: Claim, suite: SuiteData) -> list[Measurement]:
    spec = claim.records
    assert spec is not None
    sel: Selector = spec.where
    out = []
    for a in (r for r in suite.rows if _matches(r, sel.method, sel.params, sel.task, sel.model)):
        if not _measured_by(spec.value, a, suite):
            continue
        if spec.versus is None:
            out.append(_single(spec.value, a, suite, spec.teacher_not_below))
            continue
        va = json.loads(a["params_json"])
        for b in suite.rows:
            same = all(json.loads(b["params_json"]).get(k) == va.get(k) for k in spec.versus.same_params)
            if b is not a and (b["task"], b["model"]) == (a["task"], a["model"]) and same and \
                    _matches(b, spec.versus.method, spec.versus.params) and _measured_by(spec.value, b, suite):
                m = _pair(claim, a, b, suite)
                if m is not None:
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
        return Measurement(n / d, n / d, n / d, f"({n:,} ÷ {d:,} {what})", where)
    value = a.ratio_of / n if a.ratio_of is not None else n / a.divide_by
    if a.ratio_of is not None:
        where = f"{a.ratio_text} ÷ our count, {where}"
    return Measurement(value, value, value, f"({n:,} {what})", where)


def _model_text(model: str, params: dict[str, Any]) -> str:
    given = short_params(json.dumps(params))
    return model + (f" ({given})" if given else "")


# -- the table ------------------------------------------------------------------------------------------------------

def _command(claim: Claim) -> str:
    return " or ".join(f"`slimbench run configs/{s}.yaml`" for s in claim.suites)


def evaluate(claims: list[Claim], suites: list[SuiteData]) -> list[Line]:
    """Every claim, in file order: one line per place it is measured, or one saying why it is not."""
    lines: list[Line] = []
    for claim in claims:
        if claim.kind == "arch":
            found = [_arch(claim)]
        else:
            found = [m for s in suites for m in _rows(claim, s)] if claim.records is not None else []
        for m in found:
            verdict, reason = judge(claim, m.value, m.low, m.high, m.violations)
            lines.append(Line(claim, f"{fmt(m.value, claim.published.unit)} {m.spread}", m.where, verdict, reason))
        if found:
            continue
        if claim.kind == "full-scale":
            lines.append(Line(claim, "—", f"not run here: needs {claim.needs}", NEEDS_FULL_SCALE,
                              f"measure it with {claim.command}"))
        else:
            lines.append(Line(claim, "—", "no record in any suite yet", NOT_MEASURED, f"run {_command(claim)}"))
    return lines


HEADERS = ["source", "claim", "published", "measured (spread, seeds)", "where measured", "comparison made", "verdict"]


def markdown(lines: list[Line], suites: list[SuiteData]) -> str:
    counts = {v: sum(line.verdict == v for line in lines)
              for v in (REPRODUCED, SMALLER, NOT_REPRODUCED, NEEDS_FULL_SCALE, NOT_MEASURED)}
    read = ", ".join(f"`{s.name}` ({len(s.records)} records)" for s in suites) or "none"
    table = [[line.claim.source, f"`{line.claim.id}`: {line.claim.claim}", published_text(line.claim), line.measured,
              line.where, f"{line.claim.comparison}; {rule_text(line.claim)}", f"{line.verdict}: {line.reason}"]
             for line in lines]
    table = [[cell.replace("|", "/").replace("\n", " ") for cell in row] for row in table]
    n_claims = len({line.claim.id for line in lines})
    return "\n".join([
        "# Replication: published claims beside our measurements", "",
        f"Built by `slimbench replicate` from `configs/claims.yaml` and the run records of the suites under the "
        f"results folder: {read}. The same records give the same file, byte for byte.", "",
        f"{n_claims} claims, {len(lines)} rows: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", "",
        "Verdicts:",
        f"- **{REPRODUCED}**: our value meets the claim's rule below.",
        f"- **{SMALLER}**: our effect goes the published way, beyond the seeds' spread, but falls short of the "
        "published size (a claim of 9× is not reproduced by 1.8×, whatever our budget).",
        f"- **{NOT_REPRODUCED}**: no effect beyond the spread, the opposite effect, a larger loss than published, "
        "or a premise of the claim absent (the cell says which).",
        f"- **{NEEDS_FULL_SCALE}**: the setting needs a dataset this machine does not embed (CIFAR-10, Speech "
        "Commands, SST-2) or a GPU; the cell gives the command that measures it.",
        f"- *{NOT_MEASURED}* (no verdict): no record yet; the cell gives the command that makes one.", "",
        "Rules (checked when `configs/claims.yaml` loads; a rule looser than its claim is rejected):",
        "- close to: within a stated tolerance of the published value plus half a unit of its last printed digit "
        f"(\"3.4 M\" is 3.35–3.45 M), the two together at most {CLOSE_TO_CAP:.0%} of the value;",
        "- at least: reaches the published effect less a stated share of it and half its last digit (together at "
        f"most {AT_LEAST_CAP:.0%} of the effect over no effect: 1× for a ratio, 0 for a difference), with the "
        "measured interval clear of no effect;",
        "- loss at most: our loss (points) no larger than the published one;",
        "- direction only: the whole measured interval lies on the claimed side of no effect.", "",
        "Intervals: mean ± std over seeds (for a Δ against the baseline, the wider of the paired Δ's std and the "
        "baseline's; for a pair A − B, the widest of the differences', A's and B's); one seed is judged against 2σ "
        "of its baseline's seeds, and with no such spread a difference is never called reproduced; speedups use "
        "the band over interleaved timing rounds. Architecture counts are measured now, on the model built at the "
        "paper's input size and class count; every other value comes from the run records named in its row. "
        "Our budgets (minutes of CPU training on embedded datasets) are far smaller than the papers'.", "",
        tabulate(table, headers=HEADERS, tablefmt="github", disable_numparse=True), "",
    ])


def replication_markdown(claims: list[Claim], rows: list[dict[str, Any]], records: list[RunRecord]) -> str:
    """The table for one suite's rows and records (what `slimbench report` wrote beside each leaderboard)."""
    suite = SuiteData(records[0].suite if records else "suite", rows, {r.run_id: r for r in records})
    return markdown(evaluate(claims, [suite]), [suite])


def replicate(results: Path, out: Path | None = None, claims_path: Path | None = None) -> list[Line]:
    """Evaluate every claim on every suite under `results`; write the table atomically to `out`."""
    suites = load_suites(results)
    lines = evaluate(load_claims(claims_path), suites)
    atomic_write_text(out or Path(results) / "replication.md", markdown(lines, suites))
    return lines
