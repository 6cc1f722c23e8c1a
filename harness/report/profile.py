"""Where a suite's wall time goes: each cell's phases (loading the task and the cached baseline, applying the method
with its fine-tune, and each measurement) summed per method family, so the cost of a measurement is a read figure,
not a guess, and a change that makes one cheaper can be checked against the same table.

Baselines are trained once per task × model × seed before the cells that use them (the model cache); their training
time comes from the cache's record of it and is listed beside the cells', not inside them.
"""

from __future__ import annotations

from collections import defaultdict

from tabulate import tabulate

from slimbench.harness.run.records import RunRecord

# phases as the runner names them, in the order a cell runs them; whatever else a record names joins "other"
PHASES = ("task", "baseline", "apply", "measure.deploy", "measure.evaluate", "measure.robustness",
          "measure.explanations", "measure.runtimes", "measure.sizes", "measure.latency", "measure.counting")
LABELS = {"task": "load task", "baseline": "load baseline", "apply": "method + fine-tune",
          "measure.deploy": "deploy", "measure.evaluate": "evaluate", "measure.robustness": "robustness",
          "measure.explanations": "explanations", "measure.runtimes": "other runtimes", "measure.sizes": "sizes",
          "measure.latency": "latency", "measure.counting": "MACs"}


def phase_seconds(rec: RunRecord, phases: tuple[str, ...] = PHASES) -> dict[str, float]:
    """The record's seconds per phase, with "other" the rest of its total (setup, saving, tracking)."""
    wall = rec.wall_seconds
    out = {p: float(wall.get(p, 0.0)) for p in phases}
    out["other"] = max(float(wall.get("total", 0.0)) - sum(out.values()), 0.0)
    return out


def recorded_phases(records: list[RunRecord]) -> tuple[str, ...]:
    """The phases some record of these times (a suite without explanations has no such column)."""
    return tuple(p for p in PHASES if any(p in r.wall_seconds for r in records))


def profile_rows(records: list[RunRecord]) -> list[list[str]]:
    """Per family and for all cells: cells, mean seconds per cell, and each phase's share of the family's total."""
    timed = [r for r in records if r.status == "ok" and r.wall_seconds.get("total")]
    phases = recorded_phases(timed)
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in timed:
        groups[rec.family].append(rec)
    if len(groups) > 1:
        groups["all cells"] = timed
    rows = []
    for family, recs in groups.items():
        sums: dict[str, float] = defaultdict(float)
        for rec in recs:
            for phase, seconds in phase_seconds(rec, phases).items():
                sums[phase] += seconds
        total = sum(sums.values())
        rows.append([family, str(len(recs)), f"{total / len(recs):.1f}", f"{total / 3600:.2f}",
                     *(f"{100 * sums[p] / total:.0f} %" for p in (*phases, "other"))])
    return rows


def baseline_training_hours(records: list[RunRecord]) -> tuple[int, float]:
    """(baselines, hours) of the distinct cached baselines the records were measured against (their training's
    wall time as the cache recorded it)."""
    seen: dict[str, float] = {}
    for rec in records:
        if rec.status == "ok" and rec.baseline_training is not None:
            seen[rec.baseline_training.checkpoint] = rec.baseline_training.train_seconds
    return len(seen), sum(seen.values()) / 3600


def markdown(records: list[RunRecord]) -> list[str]:
    """The suite's time profile; empty where no record carries phase timings."""
    rows = profile_rows(records)
    if not rows:
        return []
    phases = recorded_phases([r for r in records if r.status == "ok"])
    n_base, base_hours = baseline_training_hours(records)
    lines = ["## Where the time goes", "",
             "Each cell's wall time by phase (from its record's `wall_seconds`), as a share of its family's total; "
             "'method + fine-tune' includes any training the method does, 'other' is setup, saving and tracking. "
             "Cells timed beside other cells on the same cores run slower in every phase alike.", "",
             tabulate(rows, headers=["family", "cells", "s / cell", "cell hours",
                                     *(LABELS[p] for p in phases), "other"], tablefmt="github"), ""]
    if n_base:
        lines += [f"Baselines trained for these cells (the model cache, outside the cells' time): {n_base}, "
                  f"{base_hours:.2f} h of training.", ""]
    return lines
