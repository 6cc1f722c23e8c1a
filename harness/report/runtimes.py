"""Where a compressed model pays off: every method in every runtime its suite measured, from the run records.

For suites that evaluate each model in each runtime (`measure.runtime_accuracy`): per task and backbone, one row per
method setting × runtime with its accuracy there, the Δ against the fp32 baseline evaluated in the same runtime
(paired seed by seed, with a 95 % t-interval over the seeds), the size of that runtime's own file, latency at batch
1 and N, and the speedup over the baseline deployed the same way (median over seeds, the widest round band; a
widened band that contains 1 reads as ≈1.00×). A compact matrix (method × runtime, batch-1 speedup) answers "which
compression pays off where", and a plot per task shows the same.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from tabulate import tabulate

from slimbench.harness.report.robustness import baseline_key
from slimbench.harness.report.stats import mean, short_params, std, widened
from slimbench.harness.run.records import RunRecord, atomic_write_bytes, atomic_write_text

EXAMPLES = ("b1", "bn")


@dataclass
class RuntimeRow:
    task: str
    model: str
    method: str
    params: str                     # the parameters given in the suite, short
    runtime: str
    deployed: bool                  # the runtime the method deploys its model in
    seeds: int
    accuracy: float | None          # mean over seeds, evaluated in this runtime
    delta_pts: float | None         # mean paired Δ vs the baseline evaluated in this runtime (points)
    delta_ci_pts: float | None      # half-width of the 95 % t-interval of that Δ over seeds (None: one seed)
    file_mb: float | None           # the runtime's own file (ONNX, OpenVINO IR, .pte), MB
    b1_ms: float | None
    bn_ms: float | None
    speedup_b1: float | None        # median over seeds of the per-record median round ratio
    speedup_b1_low: float | None    # the widest band over the seeds' rounds
    speedup_b1_high: float | None
    speedup_bn: float | None
    speedup_bn_low: float | None
    speedup_bn_high: float | None
    ran: str                        # what the runtime says ran (e.g. OpenVINO's precision), or why it could not
    run_ids: str


def _t975(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def reason(text: str) -> str:
    """A runtime's refusal in one line: OpenVINO's source locations ("Exception from src/...cpp:117:") dropped."""
    return re.sub(r"\s+", " ", re.sub(r"Exception from \S+:\d+:", "", text)).strip()[:160]


def _ran(rec: RunRecord, runtime: str) -> str:
    assert rec.metrics is not None
    quality = rec.metrics.by_runtime.get(runtime)
    timing = rec.metrics.latency.get(runtime, {})
    untimed = f"; not timed: {reason(timing['unavailable'])}" if "unavailable" in timing else ""
    if quality is None:
        return untimed.removeprefix("; ")
    if quality.unavailable:
        return "n/a: " + reason(quality.unavailable) + ("" if "unavailable" in timing else "; timed natively")
    ran = dict(quality.ran)
    layers = ran.pop("layer_precisions", None)
    text = ", ".join(f"{k} {v}" for k, v in ran.items())
    if layers:
        text += " (layers " + " ".join(f"{p}×{n}" for p, n in sorted(layers.items())) + ")"
    return text + untimed


def runtime_rows(records: list[RunRecord]) -> list[RuntimeRow]:
    measured = [r for r in records if r.status == "ok" and r.metrics is not None and r.metrics.by_runtime]
    bases: dict[tuple[str, ...], dict[int, RunRecord]] = defaultdict(dict)
    for rec in measured:
        if rec.family == "baseline":
            bases[baseline_key(rec)][rec.seed] = rec
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = defaultdict(list)
    for rec in measured:
        params = json.dumps(rec.config["method"]["params"], sort_keys=True)
        groups[(rec.task, rec.model, rec.method, params)].append(rec)
    rows: list[RuntimeRow] = []
    for (task, model, method, _params), recs in groups.items():
        recs.sort(key=lambda r: r.seed)
        runtimes = list(dict.fromkeys(rt for r in recs if r.metrics for rt in r.metrics.by_runtime))
        given = recs[0].details.get("params_given") or {}
        for runtime in runtimes:
            rows.append(_row(task, model, method, short_params(json.dumps(given)), runtime, recs, bases))
    rows.sort(key=lambda r: (r.task, r.model, _family_order(r.method), r.method, r.params, r.runtime))
    return rows


def _family_order(method: str) -> int:
    return 0 if method == "baseline" else 2 if method.startswith("peer.") else 1


def _row(task: str, model: str, method: str, params: str, runtime: str, recs: list[RunRecord],
         bases: dict[tuple[str, ...], dict[int, RunRecord]]) -> RuntimeRow:
    qualities = [(r, r.metrics.by_runtime.get(runtime)) for r in recs if r.metrics is not None]
    ok = [(r, q) for r, q in qualities if q is not None and q.unavailable is None and q.accuracy is not None]
    deltas: list[float] = []
    for rec, quality in ok:
        base = bases.get(baseline_key(rec), {}).get(rec.seed)
        base_quality = base.metrics.by_runtime.get(runtime) if base is not None and base.metrics else None
        if base_quality is not None and base_quality.accuracy is not None and quality.accuracy is not None:
            deltas.append(100 * (quality.accuracy - base_quality.accuracy))
    paired = len(deltas) == len(ok) and bool(ok)
    ci = _t975(len(deltas) - 1) * std(deltas) / math.sqrt(len(deltas)) if paired and len(deltas) >= 2 else None
    figures: dict[str, float | None] = {}
    for example in EXAMPLES:
        bands = [band for r in recs if r.metrics and (band := r.metrics.speedup.get(runtime, {}).get(example))]
        timings = [t for r in recs if r.metrics and isinstance(t := r.metrics.latency.get(runtime, {})
                                                                       .get(f"{example}_ms"), (int, float))]
        full = len(bands) == len(recs)
        figures[f"speedup_{example}"] = _median([b.ratio for b in bands]) if full else None
        figures[f"speedup_{example}_low"] = min(b.low for b in bands) if full else None
        figures[f"speedup_{example}_high"] = max(b.high for b in bands) if full else None
        figures[f"{example}_ms"] = mean(timings) if len(timings) == len(recs) else None
    files = [q.file_bytes for _, q in ok if q.file_bytes]
    assert recs[0].metrics is not None
    return RuntimeRow(
        task=task, model=model, method=method, params=params, runtime=runtime,
        deployed=recs[0].metrics.runtime == runtime, seeds=len(recs),
        accuracy=mean([q.accuracy for _, q in ok if q.accuracy is not None]) if ok else None,
        delta_pts=mean(deltas) if paired else None, delta_ci_pts=ci,
        file_mb=mean([f / 1e6 for f in files]) if len(files) == len(ok) and files else None,
        b1_ms=figures["b1_ms"], bn_ms=figures["bn_ms"],
        speedup_b1=figures["speedup_b1"], speedup_b1_low=figures["speedup_b1_low"],
        speedup_b1_high=figures["speedup_b1_high"], speedup_bn=figures["speedup_bn"],
        speedup_bn_low=figures["speedup_bn_low"], speedup_bn_high=figures["speedup_bn_high"],
        ran=_ran(recs[0], runtime), run_ids=" ".join(r.run_id for r in recs))


def speedup_text(ratio: float | None, low: float | None, high: float | None) -> str:
    """The speedup with its noise mark: ≈1.00× when the widened round band contains 1."""
    if ratio is None or low is None or high is None:
        return "—"
    lo, hi = widened(low, high)
    return "≈1.00×" if lo <= 1.0 <= hi else f"{ratio:.2f}×"


def delta_cell(row: RuntimeRow) -> str:
    if row.delta_pts is None:
        return "—"
    if row.delta_ci_pts is None:
        return f"{row.delta_pts:+.2f} (1 seed)"
    inside = abs(row.delta_pts) <= row.delta_ci_pts
    return f"{row.delta_pts:+.2f} ± {row.delta_ci_pts:.2f}" + (" (n.s.)" if inside else " *")


def _number(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(rows: list[RuntimeRow], peers: list[list[str]]) -> str:
    if not rows:
        return ""
    versus = ["## slimbench's int8 beside the peers'", "",
              "Each deployed where it ships, on the same trained models and calibration samples. Accuracy: ours − "
              "the peer's, paired by seed (± 95 % t-interval; `*` excludes 0, `(n.s.)` does not). Faster: the "
              "peer's latency ÷ ours in its own runtime (median over seeds; ≈1.00× when the seeds' range, widened "
              "by the run-to-run spread, contains 1).", "",
              tabulate(peers, headers=["task", "model", "slimbench", "peer", "runtimes", "Δ accuracy (pts)",
                                       "ours faster b1", "ours faster bN", "seeds"], tablefmt="github",
                       disable_numparse=True), ""] \
        if peers else []
    lines = ["# Where it pays off: every model in every runtime", "",
             "From the run records. Accuracy is evaluated in each runtime; Δ is against the fp32 baseline evaluated in "
             "the same runtime, paired seed by seed (mean ± half-width of the 95 % t-interval over the seeds; `*` "
             "when the interval excludes 0, `(n.s.)` when it does not). Speedups are against that baseline deployed "
             "the same way (median over seeds of the interleaved-round medians; ≈1.00× when the round band, "
             "widened by the run-to-run spread, contains 1). MB is the runtime's own file. **bold** runtime: where "
             "the method deploys its model (its leaderboard row).", "", *versus]
    for (task, model), group in _by_task_model(rows).items():
        lines += [f"## {task} · {model}", "", _matrix(group), "", tabulate(
            [[r.method + (f" ({r.params})" if r.params else ""), f"**{r.runtime}**" if r.deployed else r.runtime,
              _number(r.accuracy, ".4f"), delta_cell(r), _number(r.file_mb, ".2f"), _number(r.b1_ms, ".3f"),
              _number(r.bn_ms, ".2f"), speedup_text(r.speedup_b1, r.speedup_b1_low, r.speedup_b1_high),
              speedup_text(r.speedup_bn, r.speedup_bn_low, r.speedup_bn_high), r.seeds, r.ran]
             for r in group],
            headers=["method", "runtime", "accuracy", "Δ vs fp32 here (pts)", "MB", "b1 ms", "bN ms", "speedup b1",
                     "speedup bN", "seeds", "what ran"], tablefmt="github"), ""]
    return "\n".join(lines)


def _by_task_model(rows: list[RuntimeRow]) -> dict[tuple[str, str], list[RuntimeRow]]:
    out: dict[tuple[str, str], list[RuntimeRow]] = defaultdict(list)
    for row in rows:
        out[(row.task, row.model)].append(row)
    return out


def _matrix(group: list[RuntimeRow]) -> str:
    """Method × runtime: batch-1 / batch-N speedup over the baseline in that runtime."""
    runtimes = list(dict.fromkeys(r.runtime for r in group))
    by_setting: dict[str, dict[str, RuntimeRow]] = defaultdict(dict)
    for r in group:
        if r.method != "baseline":
            by_setting[r.method + (f" ({r.params})" if r.params else "")][r.runtime] = r
    table = [[setting, *[("—" if (c := cells.get(rt)) is None or c.speedup_b1 is None else
                          f"{speedup_text(c.speedup_b1, c.speedup_b1_low, c.speedup_b1_high)} / "
                          f"{speedup_text(c.speedup_bn, c.speedup_bn_low, c.speedup_bn_high)}")
                         for rt in runtimes]] for setting, cells in by_setting.items()]
    return tabulate(table, headers=["speedup b1 / bN", *runtimes], tablefmt="github")


def versus_peers(records: list[RunRecord]) -> list[list[str]]:
    """slimbench's int8 settings against each peer on the same task, backbone and seeds, each deployed where it
    ships: accuracy difference (ours − peer, paired by seed, 95 % t-interval) and how much faster ours runs
    (peer ms ÷ our ms per seed; ≈1.00× when the seeds' range, widened by the run-to-run spread, contains 1)."""
    ok = [r for r in records if r.status == "ok" and r.metrics is not None and r.metrics.by_runtime]
    ours = [r for r in ok if r.method == "quant.ptq_int8"]
    peers = [r for r in ok if r.family == "peer"]
    settings: dict[tuple[str, str, str], dict[int, RunRecord]] = defaultdict(dict)
    for rec in ours + peers:
        given = short_params(json.dumps(rec.details.get("params_given") or {}))
        settings[(rec.task, rec.model, rec.method + (f" ({given})" if given else ""))][rec.seed] = rec
    table = []
    for (task, model, mine), my_seeds in sorted(settings.items()):
        if not mine.startswith("quant.ptq_int8"):
            continue
        for (task2, model2, peer), peer_seeds in sorted(settings.items()):
            if (task2, model2) != (task, model) or not peer.startswith("peer."):
                continue
            seeds = sorted(set(my_seeds) & set(peer_seeds))
            if not seeds:
                continue
            pairs = [(my_seeds[s].metrics, peer_seeds[s].metrics) for s in seeds]
            diffs = [100 * (a.accuracy - b.accuracy) for a, b in pairs if a and b]
            ci = _t975(len(diffs) - 1) * std(diffs) / math.sqrt(len(diffs)) if len(diffs) >= 2 else None
            acc = f"{mean(diffs):+.2f}" + ("" if ci is None else f" ± {ci:.2f}" + (" (n.s.)" if abs(mean(diffs)) <= ci
                                                                                  else " *"))
            cells = [task, model, mine, peer, f"{pairs[0][0].runtime if pairs[0][0] else '?'} vs "
                                              f"{pairs[0][1].runtime if pairs[0][1] else '?'}", acc]
            for key in ("latency_b1_ms", "latency_bn_ms"):
                ratios = [getattr(b, key) / getattr(a, key) for a, b in pairs if a and b]
                cells.append(speedup_text(_median(ratios), min(ratios), max(ratios)))
            table.append(cells + [str(len(seeds))])
    return table


def csv_text(rows: list[RuntimeRow]) -> str:
    buf = io.StringIO()
    names = list(asdict(rows[0])) if rows else []
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return buf.getvalue()


def plot(rows: list[RuntimeRow], task: str, path: Path) -> bool:
    """Batch-1 speedup per method in each runtime, one panel per backbone (bars: the seeds' widest round band)."""
    pts = [r for r in rows if r.task == task and r.method != "baseline" and r.speedup_b1 is not None]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in pts))
    runtimes = list(dict.fromkeys(r.runtime for r in pts))
    fig, axes = plt.subplots(len(models), 1, figsize=(11, 3.2 * len(models)), squeeze=False)
    width = 0.8 / max(len(runtimes), 1)
    for ax, model in zip(axes[:, 0], models):
        group = [r for r in pts if r.model == model]
        settings = list(dict.fromkeys(r.method + (f" ({r.params})" if r.params else "") for r in group))
        for j, runtime in enumerate(runtimes):
            xs, ys, errs = [], [], []
            for i, setting in enumerate(settings):
                row = next((r for r in group if r.runtime == runtime
                            and r.method + (f" ({r.params})" if r.params else "") == setting), None)
                if row is None or row.speedup_b1 is None:
                    continue
                xs.append(i + (j - (len(runtimes) - 1) / 2) * width)
                ys.append(row.speedup_b1)
                errs.append([row.speedup_b1 - (row.speedup_b1_low or row.speedup_b1),
                             (row.speedup_b1_high or row.speedup_b1) - row.speedup_b1])
            if xs:
                ax.bar(xs, ys, width, label=runtime, yerr=list(zip(*errs)), capsize=2)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels([s if len(s) < 38 else s[:36] + "…" for s in settings], rotation=20, ha="right",
                           fontsize=7)
        ax.set_ylabel("speedup at batch 1")
        ax.set_title(f"{task} · {model}: speedup over the fp32 baseline in the same runtime", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=len(runtimes))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True


def write(records: list[RunRecord], suite_dir: Path) -> list[RuntimeRow]:
    """runtimes.md, runtimes.csv and runtimes_<task>.png in `suite_dir`, when its records measured runtimes."""
    rows = runtime_rows(records)
    if not rows:
        return rows
    atomic_write_text(suite_dir / "runtimes.md", markdown(rows, versus_peers(records)) + "\n")
    atomic_write_text(suite_dir / "runtimes.csv", csv_text(rows))
    for task in sorted({r.task for r in rows}):
        plot(rows, task, suite_dir / f"runtimes_{task}.png")
    return rows
