"""Sweeps over one method parameter (sparsity, MACs ratio, clusters, ...): the pruning literature's two reporting
rules (Blalock et al. 2020), a random control at every sparsity and curves rather than single points.

`controls_markdown` pairs each method with the control it declares (`Method.control`; same task, model, params
and seed: `prune.magnitude` against `prune.random`) and says whether the method beats the control by more than the
seeds' spread. A sweep varies the methods' declared knobs (`Method.knobs`); every other parameter names a curve.
`plot` draws, per task, accuracy against measured compression and against measured latency, one line per
(model, method, fixed params), with the seeds' spread as error bars.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from slimbench.harness.report.rows import LeaderboardRow
from slimbench.harness.report.stats import knobs, mean, std
from slimbench.harness.run.records import RunRecord, atomic_write_bytes


def controls() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each registered method that names a control (`Method.control`): the control and the method's own knobs
    (what its pairs are swept over; every other parameter is fixed)."""
    from slimbench.methods import METHODS

    return {name: (cls.control, cls.knobs) for name in METHODS.names()
            if (cls := METHODS.get(name)).control is not None}


def _params(rec: RunRecord) -> dict[str, Any]:
    return dict(rec.config.get("method", {}).get("params") or {})


def _key(rec: RunRecord) -> tuple[str, str, str]:
    return rec.task, rec.model, json.dumps(_params(rec), sort_keys=True)


def control_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per (task, model, params) where both a method and its control have finished seeds.

    Δ is paired by seed (method − control on the same seed's baseline). The method beats its control when the
    mean Δ exceeds the paired Δ's spread and both sides' seed spreads: a gap the seeds could not produce alone.
    """
    pairs = controls()
    paired = set(pairs) | {control for control, _ in pairs.values()}
    accs: dict[tuple[str, tuple[str, str, str]], dict[int, float]] = defaultdict(dict)
    given_params: dict[tuple[str, tuple[str, str, str]], dict[str, Any]] = {}
    for rec in records:
        if rec.status == "ok" and rec.method in paired and rec.metrics is not None:
            accs[rec.method, _key(rec)][rec.seed] = float(rec.metrics.accuracy)
            given_params.setdefault((rec.method, _key(rec)), rec.details.get("params_given", _params(rec)))
    rows = []
    for (method, key), by_seed in sorted(accs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if method not in pairs or (pairs[method][0], key) not in accs:
            continue
        control, swept = pairs[method]
        other = accs[control, key]
        seeds = sorted(set(by_seed) & set(other))
        if not seeds:
            continue
        m, c = [by_seed[s] for s in seeds], [other[s] for s in seeds]
        deltas = [a - b for a, b in zip(m, c)]
        spread = max(std(deltas), std(m), std(c))
        if len(seeds) < 2:
            verdict = "1 seed: no spread to judge against"
        elif mean(deltas) > spread:
            verdict = "beats the control beyond the seeds' spread"
        elif mean(deltas) < -spread:
            verdict = "worse than the control beyond the seeds' spread"
        else:
            verdict = "inside the seeds' spread"
        params, given = json.loads(key[2]), given_params[method, key]
        rows.append({"task": key[0], "model": key[1], "method": method, "control": control,
                     "fixed": {k: v for k, v in given.items() if k not in swept},
                     "swept": {k: params[k] for k in swept if k in params}, "seeds": seeds,
                     "accuracy": mean(m), "accuracy_std": std(m), "control_accuracy": mean(c),
                     "control_accuracy_std": std(c), "delta": mean(deltas), "delta_std": std(deltas),
                     "spread": spread, "verdict": verdict})
    return sorted(rows, key=lambda r: (r["task"], r["model"], r["method"], json.dumps(r["fixed"], sort_keys=True),
                                       sorted(r["swept"].items())))


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def controls_markdown(records: list[RunRecord]) -> list[str]:
    rows = control_rows(records)
    if not rows:
        return []
    lines = ["## Methods against their random controls", "",
             "Same task, model, parameters, fine-tune and seed; Δ = method − control per seed, in points (mean ± std "
             "over seeds). A method beats its control only when the mean Δ exceeds the paired Δ's spread and both "
             "sides' seed spreads.", ""]
    for task in sorted({r["task"] for r in rows}):
        table = [[r["model"], r["method"] + " vs " + r["control"], _short(r["swept"]), _short(r["fixed"]),
                  " ".join(map(str, r["seeds"])),
                  f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f}",
                  f"{r['control_accuracy']:.4f} ± {r['control_accuracy_std']:.4f}",
                  f"{100 * r['delta']:+.2f} ± {100 * r['delta_std']:.2f}", f"{100 * r['spread']:.2f}", r["verdict"]]
                 for r in rows if r["task"] == task]
        lines += [f"### {task}", "", tabulate(table, headers=["model", "pair", "swept", "other params", "seeds",
                                                              "method acc", "control acc", "Δ (pts)",
                                                              "spread (pts)", "verdict"], tablefmt="github"), ""]
    return lines


def _curves(rows: list[LeaderboardRow], task: str) -> dict[str, list[LeaderboardRow]]:
    """Leaderboard rows of one task grouped into curves: same model, method and every non-swept parameter."""
    curves: dict[str, list[LeaderboardRow]] = defaultdict(list)
    swept = knobs()
    for r in rows:
        if r.task != task or r.family == "baseline":
            continue
        given = json.loads(r.params_given)
        if not any(k in given for k in swept):
            continue
        fixed = {k: v for k, v in given.items() if k not in swept}
        curves[f"{r.model} · {r.method}" + (f" ({_short(fixed)})" if fixed else "")].append(r)
    return {name: sorted(pts, key=lambda r: r.compression_x) for name, pts in curves.items() if len(pts) >= 2}


def plot(rows: list[LeaderboardRow], task: str, path: Path) -> bool:
    """`sweep_<task>.png`: accuracy against measured compression and measured latency (batch 1 and batch N, the
    deployed runtime), one line per curve, baselines as horizontal bands. False when the task has no sweep."""
    curves = _curves(rows, task)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = [r for r in rows if r.task == task and r.family == "baseline"
                 and any(r.model == c[0].model for c in curves.values())]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    panels = (("compression_x", "stored compression vs fp32 (×, log; measured)"),
              ("latency_b1_ms", "latency, batch 1 (ms, log; deployed runtime)"),
              ("latency_bn_ms", "latency, batch N (ms, log; deployed runtime)"))
    for ax, (key, xlabel) in zip(axes, panels):
        for name, pts in sorted(curves.items()):
            ax.errorbar([getattr(p, key) for p in pts], [p.accuracy for p in pts], yerr=[p.accuracy_std for p in pts],
                        fmt="o-", capsize=3, markersize=4, label=name)
        for b in baselines:
            x = getattr(b, key)
            ax.errorbar([x], [b.accuracy], yerr=[b.accuracy_std], fmt="s", color="black", capsize=3,
                        markersize=5, label=f"{b.model} baseline ({len(b.seeds.split())} seeds)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(f"{task}: sweeps from run records (each point a parameter setting; error bars the seeds' spread)")
    fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(labels) + 2) // 3), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True
