"""Per-layer tables a method's record holds, printed under the leaderboard: what mixed precision chose for each
layer and the sensitivity it measured to choose it (one table per task, model and parameter setting; seed 0's
record, or the lowest seed present, since the choice is made once per trained baseline)."""

from __future__ import annotations

import json
from typing import Any

from tabulate import tabulate

from slimbench.harness.run.records import RunRecord


def _first_seed(records: list[RunRecord], method: str) -> list[RunRecord]:
    chosen: dict[tuple[str, str, str], RunRecord] = {}
    for rec in sorted(records, key=lambda r: r.seed):
        if rec.status == "ok" and rec.method == method and rec.details.get("layers"):
            key = (rec.task, rec.model, json.dumps(rec.details.get("params_given", {}), sort_keys=True))
            chosen.setdefault(key, rec)
    return [chosen[k] for k in sorted(chosen)]


def mixed_precision_markdown(records: list[RunRecord]) -> list[str]:
    chosen = _first_seed(records, "quant.mixed")
    if not chosen:
        return []
    lines = ["## Mixed precision: each layer's measured sensitivity and chosen precision", "",
             "Sensitivity = the validation loss (nats) and accuracy change when only that layer runs in int8 (the "
             "rest float32), in ONNX Runtime; the most sensitive layers stay float32 until the budget holds. The "
             "search line lists how many float32 layers each probe kept and what the whole graph lost.", ""]
    for rec in chosen:
        layers: list[dict[str, Any]] = rec.details["layers"]
        int8 = [row for row in layers if row.get("precision") == "int8"]
        params_int8 = sum(row.get("params", 0) for row in int8)
        params_all = sum(row.get("params", 0) for row in layers) or 1
        given = ", ".join(f"{k}={v}" for k, v in rec.details.get("params_given", {}).items())
        search = "; ".join(f"{s['float_layers']} float: Δloss {s['loss_increase']:+.4f}, Δacc {100 * s['accuracy_change']:+.2f} pts"
                           for s in rec.details.get("search", []))
        lines += [f"### {rec.task} · {rec.model} · quant.mixed ({given}), seed {rec.seed}", "",
                  f"{len(int8)} of {len(layers)} layers int8, holding {100 * params_int8 / params_all:.1f} % of the "
                  f"weights; test accuracy {rec.metrics['accuracy']:.4f}; stored {rec.metrics['stored_bytes']:,} B. "
                  f"Search: {search or 'none recorded'}.", "",
                  tabulate([[row.get("layer"), row.get("op"), row.get("params"),
                             f"{row.get('loss_increase', float('nan')):+.6f}",
                             f"{100 * row.get('accuracy_change', float('nan')):+.2f}", row.get("precision")]
                            for row in layers],
                           headers=["layer", "op", "params", "Δ val loss (int8 alone)", "Δ val acc (pts)", "precision"],
                           tablefmt="github"), ""]
    return lines
