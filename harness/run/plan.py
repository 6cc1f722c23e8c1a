"""`slimbench plan`: where a suite stands (done / n/a / pending / failed) and how long the rest should take, estimated
from the wall times of finished cells of the same kind (never a guess when nothing comparable has run)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from slimbench.core.errors import CheckpointError
from slimbench.harness.run.records import NOT_APPLICABLE, RunRecord, read_record, unmeasured_reason
from slimbench.harness.run.shards import in_shard
from slimbench.harness.run.suite import Cell, Suite


@dataclass
class Plan:
    done: list[Cell] = field(default_factory=list)
    failed: list[Cell] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)   # run_id -> why the method cannot apply
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


class WallTimes:
    """Wall times of finished work, to estimate work before it runs: a cell's own time where a record of that very
    cell exists (a reproduction beside the committed records), else the median of finished cells of the same
    model and method, else the same method, else the same family (a baseline cell's time is mostly training, a
    method cell's mostly its own work), else every finished cell; a baseline's training time from any record that
    names its checkpoint."""

    def __init__(self) -> None:
        self.cell: dict[str, float] = {}
        self.training: dict[str, float] = {}          # checkpoint file name -> seconds it took to train
        self.by_kind: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.by_method: dict[str, list[float]] = defaultdict(list)
        self.by_family: dict[bool, list[float]] = defaultdict(list)   # baseline or not
        self.every: list[float] = []

    @classmethod
    def read(cls, runs_dirs: list[Path]) -> WallTimes:
        times = cls()
        for runs in runs_dirs:
            for path in sorted(Path(runs).glob("*.json")):
                rec = _record(runs, path.stem)
                if rec is not None and rec.status == "ok":
                    times.add(rec)
        return times

    def add(self, rec: RunRecord) -> None:
        wall = float(rec.wall_seconds.get("total", 0.0))
        self.cell.setdefault(rec.run_id, wall)
        self.by_kind[rec.model, rec.method].append(wall)
        self.by_method[rec.method].append(wall)
        self.by_family[rec.method == "baseline"].append(wall)
        self.every.append(wall)
        trained = rec.baseline_training
        if trained is not None and trained.checkpoint:
            self.training.setdefault(Path(trained.checkpoint).name, float(trained.train_seconds))

    def __bool__(self) -> bool:
        return bool(self.every)

    def estimate(self, cell: Cell) -> tuple[float, str] | None:
        """(seconds, what it was estimated from), or None when nothing finished resembles it."""
        if cell.run_id in self.cell:
            return self.cell[cell.run_id], "the same cell"
        for kind, pool in (("model and method", self.by_kind.get((cell.model.name, cell.method.name))),
                           ("method", self.by_method.get(cell.method.name)),
                           ("family", self.by_family.get(cell.method.name == "baseline")),
                           ("all finished cells", self.every)):
            if pool:
                return statistics.median(pool), kind
        return None

    def train_estimate(self, checkpoint: Path) -> float | None:
        return self.training.get(checkpoint.name)


def make_plan(suite: Suite, runs: Path, shard: tuple[int, int] | None = None) -> Plan:
    """Done / failed / pending cells of `suite` in `runs`; pending and failed ones estimated from the done ones
    (see WallTimes: never a guess when nothing comparable has run)."""
    plan = Plan()
    times = WallTimes()
    for cell in suite.cells:
        if shard is not None and not in_shard(cell.run_id, *shard):
            continue
        rec = _record(runs, cell.run_id)
        if rec is None:
            plan.pending.append(cell)
        elif rec.status == "ok":
            plan.done.append(cell)
            times.add(rec)
        elif rec.status == NOT_APPLICABLE:
            plan.not_applicable[cell.run_id] = unmeasured_reason(rec)
        else:
            plan.failed.append(cell)
    if not times:
        return plan
    total = 0.0
    for cell in plan.pending + plan.failed:
        estimate = times.estimate(cell)
        assert estimate is not None   # at least one cell is done, so "all finished cells" always answers
        seconds, kind = estimate
        total += seconds
        plan.estimated_from[kind] += 1
    plan.estimate_seconds = total
    return plan


def plan_text(suite: Suite, plan: Plan) -> str:
    lines = [f"suite {suite.name}: {len(suite.cells)} cells; {len(plan.done)} done, {len(plan.not_applicable)} n/a, "
             f"{len(plan.failed)} failed, {len(plan.pending)} pending"]
    if plan.pending or plan.failed:
        if plan.estimate_seconds is None:
            lines.append("remaining time: unknown (no finished cell to estimate from; run a few cells first)")
        else:
            how = ", ".join(f"{n} by {kind}" for kind, n in plan.estimated_from.most_common())
            lines.append(f"remaining time: about {plan.estimate_seconds / 60:.1f} min on one worker like the one "
                         f"that ran the finished cells (median wall time of finished cells of the same kind: {how})")
    labels = {cell.run_id: cell.label for cell in suite.cells}
    for run_id, reason in plan.not_applicable.items():
        lines.append(f"n/a      {run_id}  {labels[run_id]}: {reason}")
    for cell in plan.failed:
        lines.append(f"failed   {cell.run_id}  {cell.label}")
    for cell in plan.pending:
        lines.append(f"pending  {cell.run_id}  {cell.label}")
    return "\n".join(lines)
