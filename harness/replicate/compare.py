"""Two result folders side by side, figure by figure, each with its tolerance and a verdict.

`slimbench compare A B` checks B (e.g. a fresh run) against A (e.g. the committed reference records);
`slimbench reproduce SUITE` runs a suite afresh into a scratch folder and compares it with the committed one.

Two regimes, chosen per cell from the kernels each record names (harness/run/numerics.py):
- same kernels (both pinned to the same instruction set, or native on the same CPU model), same torch: training
  and evaluation are deterministic, so every figure but latency must be equal; a difference fails the run and
  names the first figure that differs;
- different kernels (native on another CPU, another architecture): the run is another sample of the seed
  distribution. Accuracy-like figures are judged against a spread the project measured: 3σ over the seeds of the
  same cell, else of the same task and model's baseline in any committed suite; with no measured spread the
  figure is shown as not judged, never judged against σ = 0. Parameters, multiply-adds and sparsity are exact
  unless the method chooses its structure from the trained weights (`Method.structure_from_data`), which are
  then judged like accuracy.
Speedups are never exact: the two runs' bands, each widened by the measured run-to-run spread, must overlap.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from slimbench.core.errors import SlimbenchError
from slimbench.harness.measure.figures import Metrics
from slimbench.harness.report.stats import RUN_TO_RUN_SPEEDUP, widened
from slimbench.harness.run.numerics import numerics, same_kernels
from slimbench.harness.run.records import RunRecord, atomic_write_text, load_records

SEED_SIGMAS = 3.0
STRUCTURE = ("params", "macs")
SIZES = ("nonzero_params", "stored_bytes", "gzip_bytes")
LABEL_WIDTH = 60


@dataclass
class Check:
    cell: str
    figure: str
    reference: Any
    new: Any
    tolerance: str
    ok: bool
    exact: bool
    judged: bool = True        # False: no measured spread to judge it against (shown, not counted as a failure)
    kernels: str = ""          # the kernels both records shared, where the figure had to be equal for that reason

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "not judged"
        if self.ok:
            return "equal" if self.exact else "within tolerance"
        return "DIFFERS (exact figure)" if self.exact else "outside tolerance"


def _key(rec: RunRecord) -> tuple[str, ...]:
    return (rec.task, rec.model, rec.method, json.dumps(rec.config["method"]["params"], sort_keys=True), str(rec.seed))


def short_label(rec: RunRecord, width: int = LABEL_WIDTH) -> str:
    """A cell's name that fits a table column: task/model/method[params]/seed, params shortened past `width`."""
    params = ",".join(f"{k}={v}" for k, v in rec.details.get("params_given", {}).items())
    head, tail = f"{rec.task}/{rec.model}/{rec.method}", f"/s{rec.seed}"
    full = head + (f"[{params}]" if params else "") + tail
    if len(full) <= width:
        return full
    room = width - len(head) - len(tail) - 3
    return head + (f"[{params[:max(room, 0)]}…]" if room > 4 else "[…]") + tail


def _structure_from_data(method: str) -> bool:
    from slimbench.methods import METHODS

    try:
        return bool(getattr(METHODS.get(method), "structure_from_data", False))
    except SlimbenchError:   # a plugin method not loaded here: judge its structure like accuracy, to be safe
        return True


class Spread:
    """σ over seeds of each figure, per cell group (task, model, method, params), measured in committed records;
    a group with one seed borrows its task and model's baseline σ from any committed suite."""

    def __init__(self, records: list[RunRecord]):
        values: dict[tuple[tuple[str, ...], str], list[float]] = defaultdict(list)
        for rec in records:
            if rec.status != "ok":
                continue
            for fig, v in _judged_figures(rec).items():
                values[(rec.suite, *_key(rec)[:4]), fig].append(v)
        self.own: dict[tuple[tuple[str, ...], str], float] = {}
        self.baseline: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for (group, fig), vs in values.items():
            if len(vs) < 2:
                continue
            sigma = statistics.stdev(vs)
            self.own[group[1:], fig] = max(sigma, self.own.get((group[1:], fig), 0.0))
            if group[3] == "baseline":
                self.baseline[group[1], group[2], fig].append(sigma)

    def sigma(self, rec: RunRecord, fig: str) -> tuple[float | None, str]:
        own = self.own.get((_key(rec)[:4], fig))
        if own:
            return own, "σ of this cell's seeds"
        base = self.baseline.get((rec.task, rec.model, fig))
        if base and fig in ("accuracy", "corrupted accuracy"):   # a seed moves every model as it moves the baseline
            return max(base), f"σ of {rec.task}/{rec.model} baseline seeds"
        return None, "no measured spread"


def _metrics(rec: RunRecord) -> Metrics:
    if rec.metrics is None:
        raise SlimbenchError(f"run record {rec.run_id} ({rec.status}) was never measured")
    return rec.metrics


def _judged_figures(rec: RunRecord) -> dict[str, float]:
    m = _metrics(rec)
    out = {"accuracy": m.accuracy}
    if m.mean_corrupted_accuracy is not None:
        out["corrupted accuracy"] = m.mean_corrupted_accuracy
    for fig in (*STRUCTURE, *SIZES):   # figures named by their Metrics field
        out[fig] = getattr(m, fig)
    return out


def _checks_exact(cell: str, a: RunRecord, b: RunRecord) -> list[Check]:
    """Same kernels: every figure but latency equal."""
    shared = numerics(a)
    fa, fb = _judged_figures(a), _judged_figures(b)
    checks = [Check(cell, fig, va, fb.get(fig), f"exact ({shared})", va == fb.get(fig), True, kernels=shared)
              for fig, va in fa.items()]
    ha, hb = (a.artifact.sha256 if a.artifact else None), (b.artifact.sha256 if b.artifact else None)
    if ha and hb:   # the stored model itself, bit for bit: the strictest figure there is
        checks.append(Check(cell, "stored model sha256", ha[:12], hb[:12], f"exact ({shared})", ha == hb, True,
                            kernels=shared))
    return checks + _checks_settings(cell, a, b, exact_sparsity=True)


def _checks_settings(cell: str, a: RunRecord, b: RunRecord, exact_sparsity: bool) -> list[Check]:
    req_a = a.compression.requested if a.compression else {}
    req_b = b.compression.requested if b.compression else {}
    out = [Check(cell, "requested", req_a, req_b, "exact", req_a == req_b, True)]
    if "sparsity" in req_a and exact_sparsity:
        sa = a.compression.achieved.get("sparsity") if a.compression else None
        sb = b.compression.achieved.get("sparsity") if b.compression else None
        out.append(Check(cell, "achieved sparsity", sa, sb, "exact", sa == sb, True))
    return out


def _checks_spread(cell: str, a: RunRecord, b: RunRecord, spread: Spread) -> list[Check]:
    """Different kernels: accuracy-like figures within 3σ of a measured spread; structure exact unless chosen from
    the trained weights."""
    data_structure = _structure_from_data(a.method)
    fa, fb = _judged_figures(a), _judged_figures(b)
    checks: list[Check] = []
    for fig, va in fa.items():
        vb = fb.get(fig)
        if fig in STRUCTURE and not data_structure:
            checks.append(Check(cell, fig, va, vb, "exact (structure fixed by the code)", va == vb, True))
            continue
        sigma, source = spread.sigma(a, fig)
        if va == vb:
            checks.append(Check(cell, fig, va, vb, "equal", True, False))
        elif sigma is None:
            checks.append(Check(cell, fig, _fmt(va), _fmt(vb), "no measured spread", True, False, judged=False))
        elif vb is None:   # committed with a figure the fresh run no longer measures
            raise SlimbenchError(f"{cell}: the new record {b.run_id} has no {fig}, which {a.run_id} has")
        else:
            tol = SEED_SIGMAS * sigma
            checks.append(Check(cell, fig, _fmt(va), _fmt(vb), f"±{tol:.4g} ({SEED_SIGMAS:g}{source})",
                                abs(va - vb) <= tol, False))
    return checks + _checks_settings(cell, a, b, exact_sparsity=not data_structure)


def _fmt(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


def _checks_speed(cell: str, a: RunRecord, b: RunRecord) -> list[Check]:
    ma, mb = _metrics(a), _metrics(b)
    runtime = ma.runtime
    same_cpu = a.hardware.cpu == b.hardware.cpu
    out = []
    for batch in ("b1", "bn"):
        ba = ma.band(batch)
        bb = mb.speedup.get(runtime, {}).get(batch)   # b's band in a's runtime
        if ba and bb and a.family != "baseline":
            (al, ah), (bl, bh) = widened(ba.low, ba.high), widened(bb.low, bb.high)
            out.append(Check(cell, f"speedup {batch} ({runtime})", f"{ba.ratio:.2f} [{ba.low:.2f}–{ba.high:.2f}]",
                             f"{bb.ratio:.2f} [{bb.low:.2f}–{bb.high:.2f}]",
                             f"bands ±{RUN_TO_RUN_SPEEDUP:.0%} overlap" if same_cpu else "another CPU: its own speed",
                             al <= bh and bl <= ah, False, judged=same_cpu))
    return out


def compare_records(reference: list[RunRecord], new: list[RunRecord], spread_from: list[RunRecord] | None = None
                    ) -> tuple[list[Check], list[str]]:
    """Checks for every cell present in both; the second list names cells present in only one of them.
    `spread_from` (default: the reference records) are the committed records whose seeds measure the spread."""
    ref_by, new_by = {_key(r): r for r in reference}, {_key(r): r for r in new}
    spread = Spread(spread_from if spread_from is not None else reference)
    checks: list[Check] = []
    for key in sorted(set(ref_by) & set(new_by)):
        a, b = ref_by[key], new_by[key]
        cell = short_label(a)
        if a.status != "ok" or b.status != "ok":   # a failure reproduces only as the same failure
            checks.append(Check(cell, "status", a.status, b.status, "exact", a.status == b.status, True))
            continue
        if same_kernels(a, b):
            checks += _checks_exact(cell, a, b)
        else:
            checks += _checks_spread(cell, a, b, spread)
        checks += _checks_speed(cell, a, b)
    only = [f"only in reference: {short_label(ref_by[k])}" for k in sorted(set(ref_by) - set(new_by))]
    only += [f"only in new run: {short_label(new_by[k])}" for k in sorted(set(new_by) - set(ref_by))]
    return checks, only


def failures(checks: list[Check]) -> tuple[list[Check], list[Check]]:
    """(exact figures that differ, judged figures outside their tolerance). Speedups are shown but decide
    nothing: latency belongs to the machine and its load, not to the code."""
    return ([c for c in checks if c.exact and not c.ok],
            [c for c in checks if not c.exact and c.judged and not c.ok and not c.figure.startswith("speedup")])


def summary_line(checks: list[Check], only: list[str]) -> str:
    """The last thing a person reads: what happened and what to do. "Bit for bit" and the kernels it names come
    from the records compared, not from the process comparing them."""
    exact_bad, loose_bad = failures(checks)
    cells = sorted({c.cell for c in exact_bad + loose_bad})
    unjudged = sorted({c.cell for c in checks if not c.judged})
    n = len({c.cell for c in checks})
    missing = f"; {len(only)} cells in one folder only" if only else ""
    if not cells and unjudged:
        return (f"inconclusive: nothing differs beyond a measured tolerance, but {len(unjudged)} of {n} cells have "
                f"figures computed with other kernels and no measured spread to judge them; rerun with the same "
                f"pinned kernels (the default) to compare bit for bit{missing}.")
    if not cells:
        exact = all(c.exact for c in checks if not c.figure.startswith("speedup"))
        shared = {c.kernels for c in checks if c.exact and c.kernels}
        pinned = len(shared) == 1 and next(iter(shared)).startswith("pinned")
        how = ("bit for bit with pinned AVX2 kernels" if pinned and exact else
               "bit for bit" if exact else "within the measured tolerances")
        return f"reproduced: {n} cells {how}{missing}."
    first = next(iter(exact_bad + loose_bad))
    return (f"{len(cells)} of {n} cells differ: {', '.join(cells[:3])}{' …' if len(cells) > 3 else ''} "
            f"(first: {first.cell} {first.figure} {first.reference} → {first.new}); see the report's sections, "
            f"and compare the records' kernels (pinned vs native) before reading it as a code change.")


def markdown(checks: list[Check], only: list[str], ref_dir: Path, new_dir: Path, wall_seconds: float | None,
             kernels_text: str = "") -> str:
    exact_bad, loose_bad = failures(checks)
    by_cell: dict[str, list[Check]] = defaultdict(list)
    for c in checks:
        by_cell[c.cell].append(c)
    lines = ["# Reproduction: committed records beside a fresh run", "",
             f"Reference `{ref_dir}`, new run `{new_dir}`" + (f" ({wall_seconds / 60:.1f} min)" if wall_seconds else "")
             + (f"; {kernels_text}" if kernels_text else "") + ".", "",
             f"{len(by_cell)} cells, {len(checks)} figures: {sum(c.ok and c.judged for c in checks)} equal or within "
             f"tolerance, {len(exact_bad)} exact figures differ, {len(loose_bad)} outside tolerance, "
             f"{sum(not c.judged for c in checks)} not judged.", ""]
    rows = []
    for cell, cs in by_cell.items():
        bad = [c for c in cs if not c.ok]
        verdict = ("differs: " + ", ".join(c.figure for c in bad)[:40] if bad else
                   "not all judged" if any(not c.judged for c in cs) else
                   "equal" if all(c.exact or c.figure.startswith("speedup") for c in cs) else "within tolerance")
        rows.append([cell, len(cs), verdict])
    lines += [tabulate(rows, headers=["cell", "figures", "verdict"], tablefmt="github"), ""]
    if only:
        lines += ["## Cells in one folder only", ""] + [f"- {o}" for o in only] + [""]
    for cell, cs in by_cell.items():
        if all(c.ok and c.judged for c in cs):
            continue
        lines += [f"## {cell}", ""]
        detail = [[c.figure, c.reference, c.new, c.tolerance, c.verdict] for c in cs if not (c.ok and c.judged)]
        lines += [tabulate(detail, headers=["figure", "reference", "new", "tolerance", "verdict"], tablefmt="github"),
                  ""]
    lines += ["## How figures are judged", "",
              "Same kernels (both records pinned to the same instruction set, or native on the same CPU model) and "
              "the same torch: every figure but latency must be equal. Different kernels: accuracy, corrupted "
              "accuracy, sizes, and the structure of methods that choose it from the trained weights within "
              f"{SEED_SIGMAS:g}σ of a spread measured over the committed seeds (not judged where none was measured); "
              "parameters, multiply-adds and requested settings exact. Speedup bands, each widened by the "
              f"run-to-run spread measured on this kind of machine (±{RUN_TO_RUN_SPEEDUP:.0%}, "
              "harness/report/stats.py), "
              "should overlap on the same CPU model; they are shown, never a reason to fail, since latency belongs "
              "to the machine and its load. On another CPU they are not judged.", ""]
    return "\n".join(lines)


def _suite_records(results_root: Path) -> list[RunRecord]:
    """Every committed record under a results root: the seeds of other suites measure spreads too."""
    out: list[RunRecord] = []
    for runs in sorted(results_root.glob("*/runs")):
        if not runs.parent.name.startswith("."):
            out += load_records(runs)
    return out


def kernels_text(records: list[RunRecord]) -> str:
    kinds = sorted({numerics(r) for r in records})
    return "kernels: " + ", ".join(kinds)


def compare_dirs(ref_dir: Path, new_dir: Path, out: Path | None = None, wall_seconds: float | None = None
                 ) -> tuple[list[Check], list[str]]:
    for d in (ref_dir, new_dir):
        if not (Path(d) / "runs").is_dir():
            raise SlimbenchError(f"{d} has no runs/ folder of records")
    reference, new = load_records(Path(ref_dir) / "runs"), load_records(Path(new_dir) / "runs")
    spread_from = reference + [r for r in _suite_records(Path(ref_dir).parent) if r.suite != reference[0].suite] \
        if reference else reference
    checks, only = compare_records(reference, new, spread_from)
    if not checks:
        raise SlimbenchError(f"{ref_dir} and {new_dir} have no cell in common (same task, model, method, params, seed)")
    if out is not None:
        text = kernels_text(reference) + " (reference) vs " + ", ".join(sorted({numerics(r) for r in new})) + " (new)"
        atomic_write_text(out, markdown(checks, only, ref_dir, new_dir, wall_seconds, text))
    return checks, only
