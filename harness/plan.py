"""`slimbench plan`: where a suite stands (done / pending / failed) and how long the rest should take, estimated
from the wall times of finished cells of the same kind (never a guess when nothing comparable has run)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from slimbench.harness.records import RunRecord, read_record
from slimbench.harness.suite import Cell, Suite
from slimbench.core.errors import CheckpointError


@dataclass
class Plan:
    done: list[Cell] = field(default_factory=list)
    failed: list[Cell] = field(default_factory=list)
    pending: list[Cell] = field(default_factory=list)
    estimate_seconds: float | None = None     # None: no finished cell to estimate from
    estimated_from: Counter = field(default_factory=Counter)   # how each pending cell was estimated


def _record(runs: Path, run_id: str) -> RunRecord | None:
    path = runs / f"{run_id}.json"
    if not path.exists():
        return None
    try:
        return read_record(path)
    except CheckpointError:
        return None


def make_plan(suite: Suite, runs: Path, shard: tuple[int, int] | None = None) -> Plan:
    """A cell's estimate is the median wall time of finished cells with the same model and method, else the same
    method, else the same family (a baseline cell's time is mostly training, a method cell's mostly its own work),
    else every finished cell."""
    from slimbench.harness.runner import in_shard

    plan = Plan()
    walls: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cell in suite.cells:
        if shard is not None and not in_shard(cell.run_id, *shard):
            continue
        rec = _record(runs, cell.run_id)
        if rec is None:
            plan.pending.append(cell)
        elif rec.status == "ok":
            plan.done.append(cell)
            walls[cell.model.name, cell.method.name].append(float(rec.wall_seconds.get("total", 0.0)))
        else:
            plan.failed.append(cell)
    if not walls:
        return plan
    by_method, by_family = defaultdict(list), defaultdict(list)
    for (model, method), values in walls.items():
        by_method[method] += values
        by_family[method == "baseline"] += values
    everything = [v for values in walls.values() for v in values]
    total = 0.0
    for cell in plan.pending + plan.failed:
        for kind, pool in (("model and method", walls.get((cell.model.name, cell.method.name))),
                           ("method", by_method.get(cell.method.name)),
                           ("family", by_family.get(cell.method.name == "baseline")),
                           ("all finished cells", everything)):
            if pool:
                total += statistics.median(pool)
                plan.estimated_from[kind] += 1
                break
    plan.estimate_seconds = total
    return plan


def plan_text(suite: Suite, plan: Plan) -> str:
    lines = [f"suite {suite.name}: {len(suite.cells)} cells; {len(plan.done)} done, {len(plan.failed)} failed, "
             f"{len(plan.pending)} pending"]
    if plan.pending or plan.failed:
        if plan.estimate_seconds is None:
            lines.append("remaining time: unknown (no finished cell to estimate from; run a few cells first)")
        else:
            how = ", ".join(f"{n} by {kind}" for kind, n in plan.estimated_from.most_common())
            lines.append(f"remaining time: about {plan.estimate_seconds / 60:.1f} min on one worker like the one "
                         f"that ran the finished cells (median wall time of finished cells of the same kind: {how})")
    for cell in plan.failed:
        lines.append(f"failed   {cell.run_id}  {cell.label}")
    for cell in plan.pending:
        lines.append(f"pending  {cell.run_id}  {cell.label}")
    return "\n".join(lines)
