"""Leaderboards (Markdown + CSV via tabulate/csv) and Pareto plots, built only from run records."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from slimbench.core.errors import SlimbenchError
from slimbench.harness.measure.evidence_data import Compression
from slimbench.harness.measure.figures import Metrics, Reference
from slimbench.harness.report import explanations, layer_tables, low_bit, profile, robustness, runtimes, sweep, training
from slimbench.harness.report.distillation import distillation_markdown
from slimbench.harness.report.leaderboards import (
    by_method_csv,
    by_method_markdown,
    by_method_rows,
    failed_rows,
    matrix_csv,
    matrix_markdown,
    matrix_rows,
)
from slimbench.harness.report.rows import FailedRow, LeaderboardRow
from slimbench.harness.report.stats import RUN_TO_RUN_SPEEDUP, delta_text, mean, short_params, std, widened
from slimbench.harness.run.numerics import measured, numerics_line
from slimbench.harness.run.records import NOT_APPLICABLE, RunRecord, atomic_write_bytes, atomic_write_text, load_records

log = logging.getLogger("slimbench")

COLUMNS = ["task", "model", "method", "params_json", "seeds", "accuracy", "accuracy_std", "macro_f1", "params",
           "nonzero_params", "stored_bytes", "gzip_bytes", "compression_x", "macs", "latency_b1_ms",
           "latency_bn_ms", "speedup_b1_x", "label", "requested", "achieved", "run_ids", "runtime", "speedup_bn_x",
           "delta_accuracy", "delta_accuracy_std", "delta_significant", "storage", "compute", "claim_verified",
           "speedup_b1_low", "speedup_b1_high", "speedup_bn_low", "speedup_bn_high", "compression_raw_x",
           "provenance", "baseline_accuracy_std", "baseline_seeds", *robustness.COLUMNS]


def _mean_dict(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Average numeric entries across seeds; keep the first value of anything else."""
    out: dict[str, Any] = {}
    for key in dicts[0] if dicts else []:
        vals = [d.get(key) for d in dicts]
        numbers = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(vals):
            out[key] = round(mean([float(v) for v in numbers]), 6)
        else:
            out[key] = vals[0]
    return out


def method_params_json(record: RunRecord) -> str:
    return json.dumps(record.config["method"]["params"], sort_keys=True)


def _band(recs: list[RunRecord], key: str) -> tuple[float, float] | None:
    """The widest interleaved-round band of the deployed runtime's speedup over the row's seeds."""
    bands = [_measured(r)[0].band(key) for r in recs]
    if not bands or any(b is None for b in bands):
        return None
    return min(b.low for b in bands if b), max(b.high for b in bands if b)


def _significant(deltas: list[float], baseline_accs: list[float]) -> bool:
    """A Δ counts only beyond the seeds' spread: of the paired Δ and of the baseline itself (needs ≥ 2 seeds)."""
    if len(deltas) < 2:
        return False
    return abs(mean(deltas)) > max(std(deltas), std(baseline_accs))


def _provenance(recs: list[RunRecord]) -> str:
    commits = {(r.provenance.git.commit or "?")[:10] for r in recs}
    dirty = any(r.provenance.git.dirty for r in recs)
    text = "mixed commits " + ", ".join(sorted(commits)) if len(commits) > 1 else f"commit {next(iter(commits))}"
    return text + (" (dirty tree)" if dirty else "")


def leaderboard_rows(records: list[RunRecord]) -> list[LeaderboardRow]:
    """One row per task × model × method × params × code versions: records of other code versions never mix."""
    groups: dict[tuple[str, ...], list[RunRecord]] = defaultdict(list)
    families: dict[tuple[str, ...], str] = {}
    for rec in records:
        if rec.status != "ok":
            continue
        key: tuple[str, ...] = (rec.task, rec.model, rec.method, method_params_json(rec),
               json.dumps(rec.config.get("versions", {}), sort_keys=True))
        groups[key].append(rec)
        families[key] = rec.family
    pairing = robustness.Pairing(records)
    explained = explanations.Pairing(records)
    rows = []
    for key, recs in groups.items():
        recs.sort(key=lambda r: r.seed)
        measured = [_measured(r) for r in recs]
        m = [x for x, _, _ in measured]
        ref = [r for _, r, _ in measured]
        comp = [c for _, _, c in measured]
        acc = [x.accuracy for x in m]
        deltas = [x.accuracy - r.accuracy for x, r in zip(m, ref)]
        b1, bn = _band(recs, "b1"), _band(recs, "bn")
        rows.append(LeaderboardRow(
            task=key[0], model=key[1], method=key[2], params_json=key[3],
            seeds=" ".join(str(r.seed) for r in recs),
            accuracy=mean(acc), accuracy_std=std(acc),
            macro_f1=mean([x.macro_f1 for x in m]),
            params=round(mean([x.params for x in m])),
            nonzero_params=round(mean([x.nonzero_params for x in m])),
            stored_bytes=round(mean([x.stored_bytes for x in m])),
            gzip_bytes=round(mean([x.gzip_bytes for x in m])),
            compression_x=mean([r.stored_bytes / x.stored_bytes for x, r in zip(m, ref)]),
            macs=round(mean([x.macs for x in m])),
            latency_b1_ms=mean([x.latency_b1_ms for x in m]),
            latency_bn_ms=mean([x.latency_bn_ms for x in m]),
            speedup_b1_x=mean([r.latency_b1_ms / x.latency_b1_ms for x, r in zip(m, ref)]),
            label="/".join(sorted({c.label for c in comp})),
            storage="/".join(sorted({c.storage for c in comp})),
            compute="/".join(sorted({c.compute for c in comp})),
            claim_verified=all(c.verified for c in comp),
            delta_accuracy_std=std(deltas),
            delta_significant=_significant(deltas, [r.accuracy for r in ref]),
            speedup_b1_low=b1[0] if b1 else None, speedup_b1_high=b1[1] if b1 else None,
            speedup_bn_low=bn[0] if bn else None, speedup_bn_high=bn[1] if bn else None,
            compression_raw_x=mean([r.state_dict_stored_bytes / x.stored_bytes for x, r in zip(m, ref)]),
            provenance=_provenance(recs),
            requested=json.dumps(comp[0].requested, sort_keys=True),
            achieved=json.dumps(_mean_dict([c.achieved for c in comp]), sort_keys=True),
            run_ids=" ".join(r.run_id for r in recs),
            family=families[key],
            params_given=json.dumps(recs[0].details.get("params_given", json.loads(key[3]))),
            speedup_bn_x=mean([r.latency_bn_ms / x.latency_bn_ms for x, r in zip(m, ref)]),
            runtime="/".join(sorted({x.runtime for x in m})),
            delta_accuracy=mean(deltas),
            latency_batch=m[0].latency_batch,
            robustness=pairing.figures(recs, families[key]),
            explanations=explained.figures(recs, families[key]),
        ))
    rows = with_baseline_spread(rows)
    from slimbench.methods import family_rank

    rows.sort(key=lambda r: (r.task, r.model, family_rank(r.family), r.method, r.params_json))
    return rows


def _measured(rec: RunRecord) -> tuple[Metrics, Reference, Compression]:
    """The parts every finished record has."""
    if rec.metrics is None or rec.reference is None or rec.compression is None:
        raise SlimbenchError(f"run record {rec.run_id} has status {rec.status!r} but no measurement")
    return rec.metrics, rec.reference, rec.compression


def with_baseline_spread(rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """A one-seed row can still be judged against the seed spread of its own baseline (same task, model, code)."""
    spread = {(r.task, r.model): (r.accuracy_std, len(r.seeds.split())) for r in rows if r.family == "baseline"}
    out = []
    for row in rows:
        std_, n = spread.get((row.task, row.model), (None, 0))
        out.append(replace(row, baseline_accuracy_std=std_ if n >= 2 else None, baseline_seeds=n))
    return out


def csv_text(rows: list[LeaderboardRow]) -> str:
    buf = io.StringIO()
    # explanation columns only where a record has them: other suites' files stay as they were
    columns = COLUMNS + (explanations.COLUMNS if explanations.measured(rows) else [])
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v))
                         for k, v in row.columns().items()})
    return buf.getvalue()


def _achieved_short(row: LeaderboardRow) -> str:
    req, ach = json.loads(row.requested), json.loads(row.achieved)
    parts = []
    for key, value in ach.items():
        if key in req:
            parts.append(f"{key} {req[key]:g}→{value:.3f}" if isinstance(value, float) else f"{key} {req[key]}→{value}")
    return "; ".join(parts)


def speedup_cell(ratio: float, low: float | None, high: float | None) -> str:
    """A speedup whose round-to-round band, widened by the measured run-to-run spread, contains 1 is noise (≈1.00×);
    the band shown is the one measured in the run."""
    if low is None or high is None:
        return f"{ratio:.2f}×"
    wide_low, wide_high = widened(low, high)
    if wide_low <= 1.0 <= wide_high:
        return f"≈1.00× ({low:.2f}–{high:.2f})"
    return f"{ratio:.2f}× ({low:.2f}–{high:.2f})"


def delta_cell(row: LeaderboardRow) -> str:
    """Δ accuracy in points: `*` beyond the seeds' spread, `n.s.` inside it, and a single seed says so."""
    if row.family == "baseline":
        return "0"
    return delta_text(row.delta_accuracy, len(row.seeds.split()), row.baseline_accuracy_std, row.delta_significant)


def label_cell(row: LeaderboardRow) -> str:
    if row.family == "baseline":
        return "reference"
    text = f"{row.storage} / {row.compute}" if row.compute else row.label
    return text if row.claim_verified else text + " ⚠ claim not verified"


def markdown_text(rows: list[LeaderboardRow], records: list[RunRecord], suite: str,
                  failed: Sequence[FailedRow] = ()) -> str:
    lines = [f"# slimbench leaderboard — suite `{suite}`", ""]
    if records:
        r0 = (measured(records) or records)[0]   # the header describes the records with figures
        hw = r0.hardware
        lines += [
            f"{len(records)} run records; measured on {hw.cpu} ({hw.logical_cpus} logical CPUs), "
            f"latency with {r0.config['measure']['threads']} thread(s), torch {r0.provenance.versions.get('torch')}, "
            f"commit `{(r0.provenance.git.commit or 'unknown')[:10]}`.",
            numerics_line(records),
            "Accuracy and macro-F1 on the test split (mean ± std over seeds); Δ acc is the change against the same "
            "model's trained baseline (same seed and budget), in points; sizes are the stored (packed) "
            "representation; latency is measured in the runtime the model is deployed in, and speedup is the "
            "baseline's latency over this model's in that same runtime and process (records hold every runtime).",
            "Storage / compute are measured, not claimed: storage is what the stored file holds for the weights "
            "(dense fp32, sparse, codebook, int8, fp16, tied); compute is what the deployed runtime's kernels execute "
            "(dense fp32, masked = zeros in dense kernels, smaller dense = fewer multiply-adds, int8, fp16). "
            "⚠ marks a method's claim the measurement contradicts. Compression is against the fp32 reference in the "
            "same stored form (a BatchNorm-folded ONNX graph for ONNX Runtime models). Speedups show the band over "
            "interleaved timing rounds; ≈1.00× = the band, widened by the run-to-run spread measured between two runs "
            f"of this suite (±{RUN_TO_RUN_SPEEDUP:.0%}), contains 1. Δ acc: * = beyond the seeds' spread, "
            "n.s. = inside it.",
            "",
        ]
    for task in sorted({r.task for r in rows} | {f.task for f in failed}):
        table = []
        for r in (r for r in rows if r.task == task):
            table.append([
                r.model, r.method, short_params(r.params_given), r.seeds,
                f"{r.accuracy:.4f} ± {r.accuracy_std:.4f}", delta_cell(r), f"{r.macro_f1:.4f}",
                f"{r.params:,}", f"{r.nonzero_params:,}", f"{r.stored_bytes / 1024:,.1f}",
                f"{r.gzip_bytes / 1024:,.1f}", f"{r.compression_x:.2f}×", f"{r.macs / 1e6:,.2f}",
                r.runtime, f"{r.latency_b1_ms:.2f}", f"{r.latency_bn_ms:.1f}",
                speedup_cell(r.speedup_b1_x, r.speedup_b1_low, r.speedup_b1_high),
                speedup_cell(r.speedup_bn_x, r.speedup_bn_low, r.speedup_bn_high), label_cell(r),
                _achieved_short(r),
            ])
        batch = next((r.latency_batch for r in rows if r.task == task), "N")
        headers = ["model", "method", "params", "seeds", "accuracy", "Δ acc (pts)", "macro-F1", "parameters",
                   "non-zero", "stored KiB", "gzip KiB", "compression", "MMACs", "runtime", "latency b1 ms",
                   f"latency b{batch} ms", "speedup b1", f"speedup b{batch}", "storage / compute",
                   "requested→measured"]
        lines += [f"## {task}", "", tabulate(table, headers=headers, tablefmt="github"), ""]
        lines += robustness.markdown(rows, task)
        lines += explanations.markdown(rows, task)
        lines += low_bit.markdown(records, task)
        lines += training.markdown(records, task)
        task_na = [f for f in failed if f.task == task and f.status == NOT_APPLICABLE]
        if task_na:
            lines += ["Not applicable (the method cannot apply to the model's architecture):", "",
                      tabulate([[f.model, f.method, short_params(f.params_given), f.seeds, f.error]
                                for f in task_na], headers=["model", "method", "params", "seed", "why"],
                               tablefmt="github"), ""]
        task_failed = [f for f in failed if f.task == task and f.status != NOT_APPLICABLE]
        if task_failed:
            lines += ["Failed cells (rerun the suite to retry them):", "",
                      tabulate([[f.model, f.method, short_params(f.params_given), f.seeds, f.error]
                                for f in task_failed], headers=["model", "method", "params", "seed", "error"],
                               tablefmt="github"), ""]
        flagged = sorted({r.provenance for r in rows if r.task == task
                          and ("dirty" in r.provenance or "mixed" in r.provenance)})
        if flagged:
            lines += ["Provenance warning: some rows come from " + "; ".join(flagged) + ".", ""]
    lines += sweep.controls_markdown(records)
    lines += layer_tables.markdown(records)
    lines += distillation_markdown(rows, records)
    lines += profile.markdown(records)
    return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both axes (smaller x, higher y), sorted by x."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


OFFSETS = [(5, 4), (5, -11), (-14, 4), (-14, -11), (5, 13), (-14, 13), (5, -20), (-14, -20), (14, -4), (-23, -4)]


def _place_labels(ax: Any, points: list[tuple[float, float]], texts: list[str], fontsize: float = 7) -> None:
    """Short numeric labels placed greedily where they overlap no earlier label (deterministic, so the PNG is
    byte-identical on rebuild); the key below the axes maps each number to its row."""
    ax.figure.canvas.draw()
    placed: list[tuple[float, float, float, float]] = []
    for (x, y), text in zip(points, texts):
        px, py = ax.transData.transform((x, y))
        w, h = fontsize * 0.62 * len(text) + 2, fontsize + 2
        choice = OFFSETS[0]
        for dx, dy in OFFSETS:
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
                choice = (dx, dy)
                break
        placed.append((px + choice[0], py + choice[1], px + choice[0] + w, py + choice[1] + h))
        ax.annotate(text, (x, y), fontsize=fontsize, xytext=choice, textcoords="offset points")


def plot_pareto(rows: list[LeaderboardRow], task: str, path: Path) -> None:
    buf = io.BytesIO()
    pareto_figure(rows, task, "png", buf, {"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def pareto_figure(rows: list[LeaderboardRow], task: str, fmt: str, out: Any, metadata: dict[str, Any]) -> None:
    """The Pareto plot of one task's rows written to `out` in `fmt` (the leaderboard's PNG, the site's SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_rows = [r for r in rows if r.task == task]
    keys = [f"{i}: {r.model} · {r.method}" + (f" ({g})" if (g := short_params(r.params_given)) else "")
            + f" [{len(r.seeds.split())} seed{'s' if len(r.seeds.split()) > 1 else ''}]"
            for i, r in enumerate(task_rows, 1)]
    key_lines = (len(keys) + 1) // 2
    fig = plt.figure(figsize=(13, 5.2 + 0.16 * key_lines))
    grid = fig.add_gridspec(2, 2, height_ratios=[5.0, 0.16 * key_lines + 0.3])
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    for ax, key, xlabel in ((axes[0], "stored_bytes", "stored size (KiB, log)"),
                            (axes[1], "latency_b1_ms", "CPU latency, batch 1 (ms, log)")):
        scale = 1024 if key == "stored_bytes" else 1
        pts = [(getattr(r, key) / scale, r.accuracy) for r in task_rows]
        for r, (x, y) in zip(task_rows, pts):
            ax.errorbar(x, y, yerr=r.accuracy_std, fmt="o", capsize=3, markersize=4,
                        color="tab:orange" if r.family == "baseline" else "tab:blue")
        front = pareto_front(pts)
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        _place_labels(ax, pts, [str(i) for i in range(1, len(pts) + 1)])
    key_ax = fig.add_subplot(grid[1, :])
    key_ax.axis("off")
    for col, chunk in enumerate((keys[:key_lines], keys[key_lines:])):
        key_ax.text(0.5 * col, 1.0, "\n".join(chunk), fontsize=7, va="top", ha="left", transform=key_ax.transAxes,
                    family="monospace")
    fig.suptitle(f"{task}: accuracy vs size and latency (from run records; orange = baselines)")
    fig.tight_layout()
    fig.savefig(out, format=fmt, dpi=110, metadata=metadata)
    plt.close(fig)


def build_report(suite_dir: Path, run_ids: set[str] | None = None) -> list[LeaderboardRow]:
    """Rebuild leaderboard.md/.csv, pareto_<task>.png and sweep_<task>.png (where a parameter is swept) from
    `suite_dir/runs/*.json`.

    `run_ids` keeps only those records: records of cells an edited suite file no longer has (an older budget)
    stay on disk but would otherwise be averaged in as extra seeds.
    """
    suite_dir = Path(suite_dir)
    records = load_records(suite_dir / "runs")
    if run_ids is not None:
        stale = [r.run_id for r in records if r.run_id not in run_ids]
        if stale:
            log.info("%d record(s) in %s are not cells of this suite file (older settings) and stay out of the "
                     "leaderboard: %s", len(stale), suite_dir / "runs", ", ".join(stale))
        records = [r for r in records if r.run_id in run_ids]
    rows = leaderboard_rows(records)
    failed = failed_rows(records)
    suite = records[0].suite if records else suite_dir.name
    atomic_write_text(suite_dir / "leaderboard.csv", csv_text(rows))
    atomic_write_text(suite_dir / "leaderboard.md", markdown_text(rows, records, suite, failed) + "\n")
    per_method = by_method_rows(rows, failed)
    atomic_write_text(suite_dir / "leaderboard_by_method.csv", by_method_csv(per_method))
    atomic_write_text(suite_dir / "leaderboard_by_method.md",
                      by_method_markdown(per_method, delta_cell, speedup_cell, label_cell) + "\n")
    matrix = matrix_rows(rows)
    atomic_write_text(suite_dir / "matrix.csv", matrix_csv(matrix))
    atomic_write_text(suite_dir / "matrix.md", matrix_markdown(matrix, failed, delta_cell, speedup_cell) + "\n")
    for task in sorted({r.task for r in rows}):
        plot_pareto(rows, task, suite_dir / f"pareto_{task}.png")
        robustness.plot(rows, task, suite_dir / f"robustness_{task}.png")
        explanations.plot(rows, task, suite_dir / f"explanations_{task}.png")
        sweep.plot(rows, task, suite_dir / f"sweep_{task}.png")
    runtimes.write(records, suite_dir)
    return rows
