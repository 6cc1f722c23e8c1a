"""What compression costs beyond the clean average: corrupted inputs, the worst-hit class, and the examples it breaks.

Every figure pairs a row's records with the baseline records of the same task, model, training and seed (Δ taken
seed by seed, on the same test examples and the same corrupted copies), and sets it beside the baseline's own
seed-to-seed churn, so what two baseline seeds already disagree on is not blamed on compression (Hooker et al. 2019,
"What Do Compressed Deep Neural Networks Forget?").
"""

from __future__ import annotations

import io
import json
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from slimbench.harness.measure.quality import unpack_bits
from slimbench.harness.run.records import RunRecord, atomic_write_bytes
from slimbench.harness.report.stats import delta_text, mean, short_params, std

COLUMNS = ["mean_corrupted_accuracy", "delta_corrupted", "delta_corrupted_std", "delta_corrupted_significant",
           "baseline_corrupted_std",
           "worst_class", "delta_worst_class", "worst_class_churn", "cie", "cie_churn"]


def correct_flags(rec: RunRecord) -> np.ndarray | None:
    """Which clean test examples the record's model got right (None for records measured before they were kept)."""
    r = rec.metrics.get("robustness") or {}
    return unpack_bits(r["test_correct"], r["test_examples"]) if "test_correct" in r else None


def identified_examples(reference: np.ndarray, model: np.ndarray) -> int:
    """Compression-identified examples: right for the reference, wrong for the model."""
    if reference.shape != model.shape:
        raise ValueError(f"the two records were measured on different test splits ({len(reference)} vs {len(model)})")
    return int((reference & ~model).sum())


def per_class(rec: RunRecord) -> np.ndarray | None:
    values = (rec.metrics.get("robustness") or {}).get("per_class_accuracy")
    return None if values is None else np.array([np.nan if v is None else v for v in values], dtype=float)


def baseline_key(rec: RunRecord) -> tuple[str, ...]:
    c = rec.config
    versions = {k: v for k, v in c.get("versions", {}).items() if k in ("task", "model", "training", "measure")}
    settings = (json.dumps(c.get(k), sort_keys=True) for k in ("task", "model", "train", "measure"))
    return (rec.task, rec.model, *settings, json.dumps(versions, sort_keys=True))


def baselines_by_seed(records: list[RunRecord]) -> dict[tuple[str, ...], dict[int, RunRecord]]:
    out: dict[tuple[str, ...], dict[int, RunRecord]] = {}
    for rec in records:
        if rec.status == "ok" and rec.family == "baseline" and rec.metrics.get("robustness"):
            out.setdefault(baseline_key(rec), {})[rec.seed] = rec
    return out


def churn(bases: dict[int, RunRecord]) -> tuple[float | None, float | None]:
    """The baseline against itself, seed against seed: mean identified examples and mean worst-class Δ (pts)."""
    pairs = [(a, b) for a, b in permutations(sorted(bases), 2)]
    flags = {s: correct_flags(r) for s, r in bases.items()}
    classes = {s: per_class(r) for s, r in bases.items()}
    if not pairs or any(f is None for f in flags.values()):
        return None, None
    cie = mean([float(identified_examples(flags[a], flags[b])) for a, b in pairs])
    worst = mean([100 * float(np.nanmin(classes[b] - classes[a])) for a, b in pairs])
    return cie, worst


def attach(rows: list[dict[str, Any]], records: list[RunRecord]) -> None:
    """Add the robustness columns to leaderboard rows (None where a record or its baseline lacks them)."""
    by_id = {r.run_id: r for r in records}
    bases = baselines_by_seed(records)
    churns = {key: churn(seeds) for key, seeds in bases.items()}   # once per baseline, not once per row
    for row in rows:
        row.update({c: None for c in COLUMNS}, baseline_corrupted_std=None)
        recs = [by_id[i] for i in row["run_ids"].split() if i in by_id]
        corrupted = [r.metrics.get("mean_corrupted_accuracy") for r in recs]
        if recs and all(v is not None for v in corrupted):
            row["mean_corrupted_accuracy"] = mean(corrupted)
        key = baseline_key(recs[0]) if recs else None
        seeds = bases.get(key, {})
        row["cie_churn"], row["worst_class_churn"] = churns.get(key, (None, None))
        paired = [(r, seeds[r.seed]) for r in recs if r.seed in seeds]
        if not paired or len(paired) < len(recs) or row["mean_corrupted_accuracy"] is None:
            continue
        deltas = [r.metrics["mean_corrupted_accuracy"] - b.metrics["mean_corrupted_accuracy"] for r, b in paired]
        row["delta_corrupted"], row["delta_corrupted_std"] = mean(deltas), std(deltas)
        spread = std([b.metrics["mean_corrupted_accuracy"] for b in seeds.values()])
        row["baseline_corrupted_std"] = spread if len(seeds) >= 2 else None
        row["delta_corrupted_significant"] = len(deltas) >= 2 and abs(mean(deltas)) > max(std(deltas), spread)
        flags = [(correct_flags(r), correct_flags(b)) for r, b in paired]
        if all(f is not None and g is not None for f, g in flags):
            row["cie"] = mean([float(identified_examples(g, f)) for f, g in flags])
        if row["_family"] == "baseline":
            continue
        class_deltas = np.nanmean([per_class(r) - per_class(b) for r, b in paired], axis=0)
        worst = int(np.nanargmin(class_deltas))
        names = (recs[0].metrics["robustness"].get("classes") or [])
        row["worst_class"] = names[worst] if worst < len(names) else str(worst)
        row["delta_worst_class"] = float(class_deltas[worst])


def _pts(value: float | None, signed: bool = True) -> str:
    return "–" if value is None else (f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}")


def corrupted_cell(row: dict[str, Any]) -> str:
    if row.get("delta_corrupted") is None:
        return "–"
    if row["_family"] == "baseline":
        return "0"
    return delta_text(row["delta_corrupted"], len(row["seeds"].split()), row.get("baseline_corrupted_std"),
                      row["delta_corrupted_significant"])


def markdown(rows: list[dict[str, Any]], task: str) -> list[str]:
    """The task's robustness table (below its leaderboard)."""
    task_rows = [r for r in rows if r["task"] == task and r.get("mean_corrupted_accuracy") is not None]
    if not task_rows:
        return []
    table = []
    for r in task_rows:
        base = r["_family"] == "baseline"
        gap = None if r["delta_corrupted"] is None else r["delta_corrupted"] - r["delta_accuracy"]
        worst = "–" if r["worst_class"] is None else f"{r['worst_class']} {100 * r['delta_worst_class']:+.1f}"
        table.append([
            r["model"], r["method"], short_params(r["_params_given"]), r["seeds"],
            "0" if base else _pts(r["delta_accuracy"]), f"{r['mean_corrupted_accuracy']:.4f}", corrupted_cell(r),
            "0" if base and gap is not None else _pts(gap), worst,
            "–" if r["worst_class_churn"] is None else f"{r['worst_class_churn']:+.1f}",
            "–" if r["cie"] is None else f"{r['cie']:.0f}", "–" if r["cie_churn"] is None else f"{r['cie_churn']:.0f}",
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


def plot(rows: list[dict[str, Any]], task: str, path: Path) -> bool:
    """Clean Δ against corrupted Δ per method: below the diagonal, a method loses more on corrupted inputs."""
    pts = [r for r in rows if r["task"] == task and r["_family"] != "baseline" and r.get("delta_corrupted") is not None]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    xs = [100 * r["delta_accuracy"] for r in pts]
    ys = [100 * r["delta_corrupted"] for r in pts]
    for r, x, y in zip(pts, xs, ys):
        ax.errorbar(x, y, xerr=100 * r["delta_accuracy_std"], yerr=100 * r["delta_corrupted_std"], fmt="o",
                    capsize=3, markersize=4)
    low, high = min(xs + ys + [0.0]) - 1, max(xs + ys + [0.0]) + 1
    ax.plot([low, high], [low, high], "--", color="grey", label="corrupted Δ = clean Δ")
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    for i, (r, x, y) in enumerate(zip(pts, xs, ys), 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    keys = [f"{i}: {r['model']} · {r['method']}" + (f" ({g})" if (g := short_params(r["_params_given"])) else "")
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
