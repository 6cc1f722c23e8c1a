"""What compression does to a model's explanations: how faithful its attributions are to it (deletion and insertion
AUC, Petsiuk et al. 2018) against its same-seed baseline's, and how far they agree with the baseline's attributions
of the same examples, set beside the baseline's own seed-to-seed agreement.

The floor is the point (as churn is for robustness): two baseline seeds trained alike already attribute differently,
so an agreement at or above what they reach is retraining's noise, not something compression did. Only Integrated
Gradients enters the tables (the records hold Gradient × input beside it).
"""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path

from tabulate import tabulate

from slimbench.harness.measure.explanation_data import (
    DEPLOYED_MODEL,
    INTEGRATED_GRADIENTS,
    Explanations,
    seed_agreements,
)
from slimbench.harness.report.robustness import baseline_key
from slimbench.harness.report.rows import ExplanationFigures, LeaderboardRow
from slimbench.harness.report.stats import delta_text, mean, short_params, std
from slimbench.harness.run.records import RunRecord, atomic_write_bytes

COLUMNS = [f"explanations_{f.name}" for f in fields(ExplanationFigures)]


def explained(rec: RunRecord) -> Explanations | None:
    """The record's explanations, None where it has none or they could not be measured (no gradients)."""
    e = rec.metrics.explanations if rec.metrics is not None else None
    return e if e is not None and e.unavailable is None and INTEGRATED_GRADIENTS in e.faithfulness else None


def measured(rows: list[LeaderboardRow]) -> bool:
    """Whether any row has explanation figures: tables and CSV columns appear only then, so the leaderboards of
    suites that do not measure explanations stay as they were."""
    return any(r.explanations.measured for r in rows)


class Pairing:
    """Each row's records beside the same task × model × training baselines of the same seed; the baselines' own
    seed-to-seed agreement computed once per baseline."""

    def __init__(self, records: list[RunRecord]):
        self.bases: dict[tuple[str, ...], dict[int, Explanations]] = {}
        for rec in records:
            e = explained(rec)
            if rec.status == "ok" and rec.family == "baseline" and e is not None:
                self.bases.setdefault(baseline_key(rec), {})[rec.seed] = e
        self.floors = {key: seed_agreements(seeds) for key, seeds in self.bases.items()}

    def figures(self, recs: list[RunRecord], family: str) -> ExplanationFigures:
        out = ExplanationFigures()
        found = [explained(r) for r in recs]
        mine = [e for e in found if e is not None]
        if not recs or len(mine) < len(found):
            return out
        ig = [e.faithfulness[INTEGRATED_GRADIENTS] for e in mine]
        out.attributed = "/".join(sorted({e.attributed for e in mine}))
        out.deletion_auc, out.insertion_auc = mean([f.deletion_auc for f in ig]), mean([f.insertion_auc for f in ig])
        out.random_deletion_auc = mean([e.random_deletion_auc or 0.0 for e in mine])
        key = baseline_key(recs[0])
        seeds, floor = self.bases.get(key, {}), self.floors.get(key, [])
        if floor:
            rho = [a.spearman for a in floor]
            out.floor_spearman, out.floor_spearman_std = mean(rho), std(rho)
            out.floor_top_k = mean([a.top_k_overlap for a in floor])
        if family == "baseline":
            return out
        agreed = [a[INTEGRATED_GRADIENTS] for e in mine if (a := e.agreement) and INTEGRATED_GRADIENTS in a]
        if len(agreed) == len(mine):
            rho = [a.spearman for a in agreed]
            out.agreement_spearman, out.agreement_spearman_std = mean(rho), std(rho)
            out.agreement_top_k = mean([a.top_k_overlap for a in agreed])
            if out.floor_spearman is not None:
                spread = max(out.agreement_spearman_std, out.floor_spearman_std or 0.0)
                out.inside_floor = out.agreement_spearman + spread >= out.floor_spearman
        paired = [(e, seeds[r.seed]) for r, e in zip(recs, mine) if r.seed in seeds]
        if len(paired) < len(recs):
            return out
        model = [e.faithfulness[INTEGRATED_GRADIENTS] for e, _ in paired]
        base = [b.faithfulness[INTEGRATED_GRADIENTS] for _, b in paired]
        every_base = [e.faithfulness[INTEGRATED_GRADIENTS] for e in seeds.values()]
        (out.delta_deletion_auc, out.delta_deletion_auc_std, out.baseline_deletion_auc_std,
         out.delta_deletion_significant) = _paired([f.deletion_auc for f in model], [f.deletion_auc for f in base],
                                                   [f.deletion_auc for f in every_base])
        (out.delta_insertion_auc, out.delta_insertion_auc_std, out.baseline_insertion_auc_std,
         out.delta_insertion_significant) = _paired([f.insertion_auc for f in model], [f.insertion_auc for f in base],
                                                    [f.insertion_auc for f in every_base])
        return out


def _paired(model: list[float], base: list[float], every_base: list[float]
            ) -> tuple[float, float, float | None, bool]:
    """Δ seed by seed, its spread, the baseline's seed spread (≥ 2 seeds), and whether Δ is beyond both (the
    leaderboard's rule for accuracy)."""
    deltas = [m - b for m, b in zip(model, base)]
    spread = std(every_base)
    significant = len(deltas) >= 2 and abs(mean(deltas)) > max(std(deltas), spread)
    return mean(deltas), std(deltas), spread if len(every_base) >= 2 else None, significant


def _delta_cell(row: LeaderboardRow, curve: str) -> str:
    f = row.explanations
    delta = getattr(f, f"delta_{curve}_auc")
    if row.family == "baseline":
        return "0"
    if delta is None:
        return "–"
    return delta_text(delta, len(row.seeds.split()), getattr(f, f"baseline_{curve}_auc_std"),
                      bool(getattr(f, f"delta_{curve}_significant")))


def agreement_cell(row: LeaderboardRow) -> str:
    """The row's agreement with its baseline and whether it sits inside the floor (two baseline seeds' agreement):
    at or above it, what compression changed is within what retraining changes."""
    f = row.explanations
    if row.family == "baseline":
        return "itself"
    if f.agreement_spearman is None:
        return "–"
    text = f"{f.agreement_spearman:.3f} / {f.agreement_top_k:.2f}"
    if f.inside_floor is None:
        return text + " (no floor)"
    return text + (" (inside the floor: noise)" if f.inside_floor else " * (below the floor)")


def _floor(f: ExplanationFigures) -> str:
    return "–" if f.floor_spearman is None else f"{f.floor_spearman:.3f} / {f.floor_top_k:.2f}"


def markdown(rows: list[LeaderboardRow], task: str) -> list[str]:
    """The task's explanations table (below its leaderboard and robustness)."""
    task_rows = [r for r in rows if r.task == task and r.explanations.measured]
    if not task_rows:
        return []
    table = []
    for r in task_rows:
        f = r.explanations
        table.append([
            r.model, r.method, short_params(r.params_given), r.seeds,
            f"{f.deletion_auc:.3f}", f"{f.random_deletion_auc:.3f}", _delta_cell(r, "deletion"),
            f"{f.insertion_auc:.3f}", _delta_cell(r, "insertion"), agreement_cell(r), _floor(f),
            "" if f.attributed == DEPLOYED_MODEL else "float source †",
        ])
    headers = ["model", "method", "params", "seeds", "deletion AUC", "random order", "deletion Δ (pts)",
               "insertion AUC", "insertion Δ (pts)", "agreement ρ / top-10 %", "floor ρ / top-10 %",
               "attributed"]
    return [f"### {task}: explanations", "",
            "Integrated Gradients attributions of the deployed model's predicted class on a fixed stratified subset of "
            "the test split. Deletion / insertion AUC: the class's probability as the most-attributed inputs are "
            "removed from the input / restored to an emptied one (Petsiuk et al. 2018; lower deletion and higher "
            "insertion = more faithful; random order: the deletion curve with no attribution at all); Δ against the "
            "same-seed baseline in AUC points (* beyond the seeds' spread). Agreement: Spearman ρ and shared top-10 % "
            "inputs with the same-seed baseline's attributions of the same examples; the floor is the same between two "
            "baseline seeds, so agreement inside it is retraining's noise. † a runtime graph without gradients: its "
            "float source was attributed (the curves are the deployed graph's own).", "",
            tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]


def plot(rows: list[LeaderboardRow], task: str, path: Path) -> bool:
    """Deletion AUC Δ against agreement with the baseline, the floor as a band: left of 0 and above the band, a
    method's explanations stayed as faithful and as close to its baseline's as retraining keeps them."""
    pts = [r for r in rows if r.task == task and r.family != "baseline"
           and r.explanations.delta_deletion_auc is not None and r.explanations.agreement_spearman is not None]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    xs = [100 * (r.explanations.delta_deletion_auc or 0.0) for r in pts]
    ys = [r.explanations.agreement_spearman or 0.0 for r in pts]
    for r, x, y in zip(pts, xs, ys):
        ax.errorbar(x, y, xerr=100 * (r.explanations.delta_deletion_auc_std or 0.0),
                    yerr=r.explanations.agreement_spearman_std or 0.0, fmt="o", capsize=3, markersize=4)
    floor = pts[0].explanations
    if floor.floor_spearman is not None:
        spread = floor.floor_spearman_std or 0.0
        ax.axhspan(floor.floor_spearman - spread, floor.floor_spearman + spread, color="grey", alpha=0.25,
                   label="baseline seed vs seed (floor ± std)")
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0, color="black", lw=0.5)
    for i, (x, y) in enumerate(zip(xs, ys), 1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    keys = [f"{i}: {r.model} · {r.method}" + (f" ({g})" if (g := short_params(r.params_given)) else "")
            for i, r in enumerate(pts, 1)]
    ax.text(1.02, 1.0, "\n".join(keys), transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    ax.set_xlabel("deletion AUC Δ vs baseline (pts; < 0: more faithful)")
    ax.set_ylabel("Spearman ρ with the baseline's attributions")
    ax.set_title(f"{task}: explanations vs the baseline's (from run records; bars = seed std)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
