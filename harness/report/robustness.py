"""What compression costs beyond the clean average: corrupted inputs, the worst-hit class, and the examples it breaks.

Every figure pairs a row's records with the baseline records of the same task, model, training and seed (Δ taken
seed by seed, on the same test examples and the same corrupted copies), and sets it beside the baseline's own
seed-to-seed churn, so what two baseline seeds already disagree on is not blamed on compression (Hooker et al. 2019,
"What Do Compressed Deep Neural Networks Forget?").
"""

from __future__ import annotations

import io
import json
from dataclasses import fields
from itertools import permutations
from pathlib import Path

import numpy as np
from tabulate import tabulate

from slimbench.harness.measure.figures import Robustness
from slimbench.harness.report.rows import LeaderboardRow, RobustnessFigures
from slimbench.harness.report.stats import delta_text, mean, short_params, std
from slimbench.harness.run.records import RunRecord, atomic_write_bytes

COLUMNS = [f.name for f in fields(RobustnessFigures)]


def _robustness(rec: RunRecord) -> Robustness | None:
    return rec.metrics.robustness if rec.metrics is not None else None


def _corrupted(rec: RunRecord) -> float | None:
    return rec.metrics.mean_corrupted_accuracy if rec.metrics is not None else None


def _corrupted_accuracy(rec: RunRecord) -> float:
    """The record's mean corrupted accuracy, for a record paired because it has one."""
    value = _corrupted(rec)
    if value is None:
        raise ValueError(f"run record {rec.run_id} has no corrupted-input accuracy to pair with")
    return value


def correct_flags(rec: RunRecord) -> np.ndarray | None:
    """Which clean test examples the record's model got right (None for records measured before they were kept)."""
    r = _robustness(rec)
    return r.correct_flags() if r is not None else None


def identified_examples(reference: np.ndarray, model: np.ndarray) -> int:
    """Compression-identified examples: right for the reference, wrong for the model."""
    if reference.shape != model.shape:
        raise ValueError(f"the two records were measured on different test splits ({len(reference)} vs {len(model)})")
    return int((reference & ~model).sum())


def per_class(rec: RunRecord) -> np.ndarray | None:
    r = _robustness(rec)
    return None if r is None else np.array([np.nan if v is None else v for v in r.per_class_accuracy], dtype=float)


def baseline_key(rec: RunRecord) -> tuple[str, ...]:
    c = rec.config
    versions = {k: v for k, v in c.get("versions", {}).items() if k in ("task", "model", "training", "measure")}
    settings = (json.dumps(c.get(k), sort_keys=True) for k in ("task", "model", "train", "measure"))
    return (rec.task, rec.model, *settings, json.dumps(versions, sort_keys=True))


def baselines_by_seed(records: list[RunRecord]) -> dict[tuple[str, ...], dict[int, RunRecord]]:
    out: dict[tuple[str, ...], dict[int, RunRecord]] = {}
    for rec in records:
        if rec.status == "ok" and rec.family == "baseline" and _robustness(rec) is not None:
            out.setdefault(baseline_key(rec), {})[rec.seed] = rec
    return out


def churn(bases: dict[int, RunRecord]) -> tuple[float | None, float | None]:
    """The baseline against itself, seed against seed: mean identified examples and mean worst-class Δ (pts)."""
    pairs = [(a, b) for a, b in permutations(sorted(bases), 2)]
    all_flags = {s: correct_flags(r) for s, r in bases.items()}
    all_classes = {s: per_class(r) for s, r in bases.items()}
    flags = {s: f for s, f in all_flags.items() if f is not None}
    classes = {s: c for s, c in all_classes.items() if c is not None}   # None exactly where the flags are
    if not pairs or len(flags) < len(all_flags):
        return None, None
    cie = mean([float(identified_examples(flags[a], flags[b])) for a, b in pairs])
    worst = mean([100 * float(np.nanmin(classes[b] - classes[a])) for a, b in pairs])
    return cie, worst


class Pairing:
    """Each row's records beside the baseline records of the same task, model, training and seed; the baselines'
    own churn computed once per baseline, not once per row."""

    def __init__(self, records: list[RunRecord]):
        self.bases = baselines_by_seed(records)
        self.churns = {key: churn(seeds) for key, seeds in self.bases.items()}

    def figures(self, recs: list[RunRecord], family: str) -> RobustnessFigures:
        """The robustness columns of the row made of `recs` (None where a record or its baseline lacks them)."""
        out = RobustnessFigures()
        corrupted = [_corrupted(r) for r in recs]
        if recs and all(v is not None for v in corrupted):
            out.mean_corrupted_accuracy = mean([v for v in corrupted if v is not None])
        key = baseline_key(recs[0]) if recs else None
        seeds = self.bases.get(key, {}) if key else {}
        out.cie_churn, out.worst_class_churn = self.churns.get(key, (None, None)) if key else (None, None)
        paired = [(r, seeds[r.seed]) for r in recs if r.seed in seeds]
        if not paired or len(paired) < len(recs) or out.mean_corrupted_accuracy is None:
            return out
        deltas = [_corrupted_accuracy(r) - _corrupted_accuracy(b) for r, b in paired]
        spread = std([_corrupted_accuracy(b) for b in seeds.values()])
        out.delta_corrupted, out.delta_corrupted_std = mean(deltas), std(deltas)
        out.baseline_corrupted_std = spread if len(seeds) >= 2 else None
        out.delta_corrupted_significant = len(deltas) >= 2 and abs(mean(deltas)) > max(std(deltas), spread)
        flags = [(f, g) for r, b in paired
                 if (f := correct_flags(r)) is not None and (g := correct_flags(b)) is not None]
        if len(flags) == len(paired):
            out.cie = mean([float(identified_examples(g, f)) for f, g in flags])
        if family == "baseline":
            return out
        classes = [(p, q) for r, b in paired if (p := per_class(r)) is not None and (q := per_class(b)) is not None]
        class_deltas = np.nanmean([p - q for p, q in classes], axis=0)
        worst = int(np.nanargmin(class_deltas))
        robust = _robustness(recs[0])
        names = robust.classes if robust is not None else []
        out.worst_class = names[worst] if worst < len(names) else str(worst)
        out.delta_worst_class = float(class_deltas[worst])
        return out


def _pts(value: float | None, signed: bool = True) -> str:
    return "–" if value is None else (f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}")


def corrupted_cell(row: LeaderboardRow) -> str:
    f = row.robustness
    if f.delta_corrupted is None:
        return "–"
    if row.family == "baseline":
        return "0"
    return delta_text(f.delta_corrupted, len(row.seeds.split()), f.baseline_corrupted_std,
                      bool(f.delta_corrupted_significant))


def markdown(rows: list[LeaderboardRow], task: str) -> list[str]:
    """The task's robustness table (below its leaderboard)."""
    task_rows = [r for r in rows if r.task == task and r.robustness.mean_corrupted_accuracy is not None]
    if not task_rows:
        return []
    table = []
    for r in task_rows:
        f = r.robustness
        base = r.family == "baseline"
        gap = None if f.delta_corrupted is None else f.delta_corrupted - r.delta_accuracy
        worst = "–" if f.worst_class is None else f"{f.worst_class} {100 * (f.delta_worst_class or 0.0):+.1f}"
        table.append([
            r.model, r.method, short_params(r.params_given), r.seeds,
            "0" if base else _pts(r.delta_accuracy), f"{f.mean_corrupted_accuracy:.4f}", corrupted_cell(r),
            "0" if base and gap is not None else _pts(gap), worst,
            "–" if f.worst_class_churn is None else f"{f.worst_class_churn:+.1f}",
            "–" if f.cie is None else f"{f.cie:.0f}", "–" if f.cie_churn is None else f"{f.cie_churn:.0f}",
        ])
    headers = ["model", "method", "params", "seeds", "clean Δ (pts)", "corrupted acc", "corrupted Δ (pts)",
               "corrupted Δ − clean Δ", "worst class Δ (pts)", "worst class Δ, baseline seed vs seed",
               "identified examples", "baseline churn"]
    return [f"### {task}: robustness", "",
            "Mean accuracy over the task's corrupted test copies (every corruption × severity, one fixed stratified "
            "subset of the test split), Δ against the same-seed baseline on the same corrupted inputs; the class "
            "whose clean accuracy fell most; test examples the baseline gets right and this model gets wrong. The "
            "baseline columns are the same figures between two baseline seeds (mean over seed pairs): what "
            "retraining alone already does.", "",
            tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]


def plot(rows: list[LeaderboardRow], task: str, path: Path) -> bool:
    """Clean Δ against corrupted Δ per method: below the diagonal, a method loses more on corrupted inputs."""
    pts = [r for r in rows if r.task == task and r.family != "baseline" and r.robustness.delta_corrupted is not None]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    xs = [100 * r.delta_accuracy for r in pts]
    ys = [100 * (r.robustness.delta_corrupted or 0.0) for r in pts]
    for r, x, y in zip(pts, xs, ys):
        ax.errorbar(x, y, xerr=100 * r.delta_accuracy_std, yerr=100 * (r.robustness.delta_corrupted_std or 0.0),
                    fmt="o", capsize=3, markersize=4)
    low, high = min(xs + ys + [0.0]) - 1, max(xs + ys + [0.0]) + 1
    ax.plot([low, high], [low, high], "--", color="grey", label="corrupted Δ = clean Δ")
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    for i, (_row, x, y) in enumerate(zip(pts, xs, ys), 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    keys = [f"{i}: {r.model} · {r.method}" + (f" ({g})" if (g := short_params(r.params_given)) else "")
            for i, r in enumerate(pts, 1)]
    ax.text(1.02, 1.0, "\n".join(keys), transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    ax.set_xlabel("clean Δ accuracy vs baseline (pts)")
    ax.set_ylabel("mean corrupted Δ accuracy vs baseline (pts)")
    ax.set_title(f"{task}: clean vs corrupted accuracy change (from run records; bars = seed std)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
