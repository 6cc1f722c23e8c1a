"""Where a suite's wall time goes: each cell's phases (loading the task and the cached baseline, applying the method
with its fine-tune, and each measurement) summed per method family, so the cost of a measurement is a read figure,
not a guess, and a change that makes one cheaper can be checked against the same table.

A baseline is trained once per task × model × seed (the model cache): by Ray before the cells that use it, or inside
the first cell that needs it (its "baseline" phase) when cells run one by one. The footer adds only the trainings that
no cell's time holds, so nothing is counted twice.
"""

from __future__ import annotations

from collections import defaultdict

from tabulate import tabulate

from slimbench.harness.run.records import RunRecord

# phases as the runner names them, in the order a cell runs them; whatever else a record names joins "other"
PHASES = ("task", "baseline", "apply", "measure.deploy", "measure.evaluate", "measure.robustness",
          "measure.explanations", "measure.runtimes", "measure.sizes", "measure.latency", "measure.counting")
LABELS = {"task": "load task", "baseline": "baseline (load or train)", "apply": "method + fine-tune",
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


def timed_records(records: list[RunRecord]) -> list[RunRecord]:
    """Finished cells with phase timings (failed and n/a cells stop early: their time says nothing of a phase)."""
    return [r for r in records if r.status == "ok" and r.wall_seconds.get("total")]


def profile_rows(records: list[RunRecord]) -> tuple[tuple[str, ...], list[list[str]]]:
    """(phases, rows): per family and for all cells, cells, mean seconds per cell and each phase's share of the
    family's total."""
    timed = timed_records(records)
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
    return phases, rows


def baseline_training_hours(records: list[RunRecord]) -> tuple[int, float]:
    """(baselines, hours) of the distinct cached baselines the records were measured against and that no cell
    trained inside its own time (a cell that trained its baseline spent at least the training's seconds in its
    "baseline" phase), with their training's wall time as the cache recorded it."""
    seen: dict[str, float] = {}
    inside: set[str] = set()
    for rec in records:
        base = rec.baseline_training
        if rec.status == "ok" and base is not None:
            seen[base.checkpoint] = base.train_seconds
            if rec.wall_seconds.get("baseline", 0.0) >= base.train_seconds:
                inside.add(base.checkpoint)
    outside = {k: v for k, v in seen.items() if k not in inside}
    return len(outside), sum(outside.values()) / 3600


def markdown(records: list[RunRecord]) -> list[str]:
    """The suite's time profile; empty where no record carries phase timings."""
    phases, rows = profile_rows(records)
    if not rows:
        return []
    n_base, base_hours = baseline_training_hours(records)
    lines = ["## Where the time goes", "",
             "Each finished cell's wall time by phase (from its record's `wall_seconds`), as a share of its family's "
             "total; failed and n/a cells are left out. 'method + fine-tune' includes any training the method does; "
             "'other' is setup, saving and tracking and, for a chain, measuring each intermediate stage. Cells that "
             "shared the cores with other cells ran slower, the compute-bound phases most.", "",
             tabulate(rows, headers=["family", "cells", "s / cell", "cell hours",
                                     *(LABELS[p] for p in phases), "other"], tablefmt="github"), ""]
    if n_base:
        lines += [f"Baselines trained for these cells outside any cell's time (the model cache, before the cells): "
                  f"{n_base}, {base_hours:.2f} h of training.", ""]
    return lines
