"""Before a row is judged its premises are checked (compute kernels, a stronger teacher, a model above chance, a PTQ
loss to recover, something compressed): a row without one is "not testable here", naming it (`check_premises`).
Second figures a claim states beside its main one are judged on their own intervals (`judge_conditions`).
"""

from __future__ import annotations

from slimbench.harness.replicate.claim_schema import Claim
from slimbench.harness.replicate.claim_terms import COMPUTE_REQUIREMENTS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from slimbench.harness.replicate.claims import Judgement, judge_loss, side
from slimbench.harness.replicate.measurements import (
    Measurement,
    SuiteData,
    paired,
    per_record,
    record_figures,
    row_records,
    single,
    teacher_accuracy,
    to_decide,
)
from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.report.stats import mean
from slimbench.harness.run.records import RunRecord


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
    teacher = [100 * teacher_accuracy(r) for r in recs]
    alone = [100 * record_figures(r)[1].accuracy for r in recs]
    value, iv = paired(teacher, alone, suite, row)
    said = (f"teacher {mean(teacher):.2f} vs student alone {mean(alone):.2f}, {value:+.2f} pts "
            f"{iv['spread']}")
    if iv["low"] is None:
        return f"teacher not shown stronger than the student alone: {said}"
    if side(iv["low"], iv["high"], 0.0, +1, strict=True) != "holds":
        return f"teacher not stronger than the student alone beyond the spread: {said}"
    return None


def _ptq_premise(b: LeaderboardRow, suite: SuiteData) -> str | None:
    """QAT recovers what PTQ lost: PTQ (the versus row) must lose accuracy beyond the spread."""
    lost = single("delta_accuracy_pts", b, suite)
    if lost.low is None or lost.high is None or side(lost.low, lost.high, 0.0, -1, strict=True) != "holds":
        return (f"PTQ lost nothing to recover: {b.method} Δ {lost.value:+.2f} pts {lost.spread} is not below 0 "
                f"beyond the spread")
    return None


def _compressed_premise(recs: list[RunRecord], least: float) -> str | None:
    """Something was compressed: the share of the baseline's non-zero parameters removed."""
    removed = 1 - mean([m.nonzero_params / r.nonzero_params for m, r in map(record_figures, recs)])
    if removed < least:
        return (f"nothing compressed: {100 * removed:.2f} % of the baseline's non-zero parameters removed (premise: "
                f"≥ {100 * least:g} %)")
    return None


def _accuracy_kept_premise(a: LeaderboardRow, suite: SuiteData, most: float) -> str | None:
    """The row's accuracy holds: its Δ against the baseline is not below −`most` beyond the seed spread."""
    acc = single("delta_accuracy_pts", a, suite)
    if acc.low is not None and acc.high is not None and side(acc.low, acc.high, -most, -1, strict=True) == "holds":
        limit = -most if most else 0.0   # never "-0"
        return (f"accuracy already dropped: Δ {acc.value:+.2f} pts {acc.spread}, below {limit:g} pts beyond the "
                f"spread (the claim speaks of models whose accuracy holds)")
    return None


def check_premises(claim: Claim, m: Measurement, a: LeaderboardRow, b: LeaderboardRow | None, suite: SuiteData) -> None:
    """Absent premises, in words, onto the measurement (the row is then "not testable here")."""
    spec = claim.records
    assert spec is not None
    ra = row_records(a, suite)
    req = claim.requires
    if req is not None and req.compute:
        m.not_testable.append(_compute_premise(req.compute, ra) or "")
    if req is not None and req.teacher_stronger:
        m.not_testable.append(_teacher_premise(a, ra, suite) or "")
    if req is not None and req.ptq_lost and b is not None:
        m.not_testable.append(_ptq_premise(b, suite) or "")
    if claim.min_compressed_fraction is not None:
        m.not_testable.append(_compressed_premise(ra, claim.min_compressed_fraction) or "")
    if claim.max_accuracy_loss is not None:
        m.not_testable.append(_accuracy_kept_premise(a, suite, claim.max_accuracy_loss) or "")
    if claim.min_accuracy_over_chance is not None:
        # the row's model and the baseline it was made from; a versus row other than the baseline may sit at chance
        # (random pruning collapsing at 95 % is what "magnitude beats random" measures there)
        margin = claim.min_accuracy_over_chance
        compared = [(a.method, [record_figures(r)[0].accuracy for r in ra], ra),
                    ("its baseline", [record_figures(r)[1].accuracy for r in ra], ra)]
        m.not_testable.extend(_at_chance(label, accs, recs, margin) or "" for label, accs, recs in compared)
    m.not_testable = [t for t in m.not_testable if t]


def judge_conditions(claim: Claim, m: Measurement, a: LeaderboardRow, suite: SuiteData) -> None:
    """Second figures the claim states beside its main one, each judged on its own interval."""
    spec = claim.records
    assert spec is not None
    recs = row_records(a, suite)
    agreed = a.explanations
    if spec.value == "faithfulness_pts" and agreed.agreement_spearman is not None:   # how far they moved: shown
        floor = ("no floor (under two baseline seeds)" if agreed.floor_spearman is None else
                 f"floor {agreed.floor_spearman:.3f} between baseline seeds: "
                 + ("inside it, noise" if agreed.inside_floor else "below it"))
        m.beside.append(f"agreement with the baseline ρ {agreed.agreement_spearman:.3f}, {floor} (not judged)")
    if spec.value == "connections_x":   # the stored size beside the paper's measure: shown, never judged
        m.beside.append(f"stored {mean([per_record('compression_x', r) for r in recs]):.2f}× smaller (not the "
                        f"paper's measure, not judged)")
    if claim.condition is not None:
        cond = claim.condition
        acc = single(cond.value, a, suite)
        what = "accuracy" if cond.value == "delta_accuracy_pts" else "macro-F1"
        m.beside.append(f"Δ {what} {acc.value:+.2f} pts {acc.spread}")
        j = (judge_loss(acc.value, acc.low, acc.high, cond.bound) if acc.low is not None and acc.high is not None
             else Judgement(INCONCLUSIVE, f"Δ {acc.value:+.2f} pts from one seed with no measured spread"))
        if j.verdict == INCONCLUSIVE and j.bound is not None:
            j.reason += to_decide(acc, j.bound, "pts")
        m.conditions.append((f"condition {what} loss ≤ {cond.bound:g} pts", j))   # its source: the claim's section
    if spec.teacher_not_below:
        teacher = [100 * teacher_accuracy(r) for r in recs]
        distilled = [100 * record_figures(r)[0].accuracy for r in recs]
        alone = [100 * record_figures(r)[1].accuracy for r in recs]
        m.beside.append(f"teacher {mean(teacher):.2f}, alone {mean(alone):.2f}, distilled {mean(distilled):.2f}")
        value, iv = paired(teacher, distilled, suite, a)
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
