"""Two result folders side by side, figure by figure, each with its tolerance and a verdict.

`slimbench compare A B` checks B (e.g. a fresh run) against A (e.g. the committed reference records);
`slimbench reproduce SUITE` runs a suite afresh into a scratch folder and compares it with the committed one.
Tolerances follow what a figure depends on:
- exact: what the code alone decides (parameters, multiply-adds, the requested settings, the sparsity a
  pruning method reaches);
- small, relative: what depends on the trained weights only through their values (non-zero parameters,
  stored and gzip bytes of data-dependent encodings);
- accuracy: on the same CPU model and instruction sets training is deterministic, so equal to 1e-6; on
  another CPU the float rounding differs and the run is another sample of the seed distribution, so within
  3 standard deviations of the seeds (floor 0.5 points); accuracy on the corrupted test copies likewise;
- speedups: the two runs' interleaved-round bands must overlap.
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
from slimbench.harness.records import RunRecord, atomic_write_text, load_records
from slimbench.harness.stats import RUN_TO_RUN_SPEEDUP, widened

SAME_MACHINE_ACCURACY = 1e-6
SEED_SIGMAS = 3.0
ACCURACY_FLOOR = 0.005
RELATIVE = {"nonzero_params": 0.005, "stored_bytes": 0.02, "gzip_bytes": 0.02}


@dataclass
class Check:
    cell: str
    figure: str
    reference: Any
    new: Any
    tolerance: str
    ok: bool
    exact: bool

    @property
    def verdict(self) -> str:
        if self.ok:
            return "equal" if self.exact else "within tolerance"
        return "DIFFERS (exact figure)" if self.exact else "outside tolerance"


def _key(rec: RunRecord) -> tuple[str, ...]:
    return (rec.task, rec.model, rec.method, json.dumps(rec.config["method"]["params"], sort_keys=True), str(rec.seed))


def _label(rec: RunRecord) -> str:
    params = ",".join(f"{k}={v}" for k, v in rec.details.get("params_given", {}).items())
    return f"{rec.task}/{rec.model}/{rec.method}" + (f"[{params}]" if params else "") + f"/s{rec.seed}"


def _same_machine(a: RunRecord, b: RunRecord) -> bool:
    keys = ("cpu", "instruction_sets", "torch_cpu_capability")
    return all(a.hardware.get(k) == b.hardware.get(k) for k in keys) and a.versions.get("torch") == b.versions.get("torch")


def seed_spread(records: list[RunRecord]) -> dict[tuple[str, ...], float]:
    """σ of accuracy over seeds per row (task, model, method, params); rows with one seed borrow their
    baseline's σ (same task and model), since a seed changes the baseline as much as anything."""
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for rec in records:
        if rec.status == "ok":
            groups[_key(rec)[:4]].append(rec.metrics["accuracy"])
    sigma = {k: statistics.stdev(v) for k, v in groups.items() if len(v) > 1}
    baseline = {k[:2]: s for k, s in sigma.items() if k[2] == "baseline"}
    return {k: sigma.get(k, baseline.get(k[:2], 0.0)) for k in groups}


def compare_records(reference: list[RunRecord], new: list[RunRecord]) -> tuple[list[Check], list[str]]:
    """Checks for every cell present in both; the second list names cells present in only one of them."""
    ref_by, new_by = {_key(r): r for r in reference}, {_key(r): r for r in new}
    sigma = seed_spread(reference)
    checks: list[Check] = []
    for key in sorted(set(ref_by) & set(new_by)):
        a, b = ref_by[key], new_by[key]
        cell = _label(a)
        if a.status != "ok" or b.status != "ok":   # a failure reproduces only as the same failure
            checks.append(Check(cell, "status", a.status, b.status, "exact", a.status == b.status, True))
            continue
        for fig in ("params", "macs"):
            checks.append(Check(cell, fig, a.metrics[fig], b.metrics[fig], "exact", a.metrics[fig] == b.metrics[fig], True))
        req_a, req_b = a.compression.get("requested", {}), b.compression.get("requested", {})
        checks.append(Check(cell, "requested", req_a, req_b, "exact", req_a == req_b, True))
        if "sparsity" in req_a:
            sa, sb = a.compression["achieved"].get("sparsity"), b.compression["achieved"].get("sparsity")
            checks.append(Check(cell, "achieved sparsity", sa, sb, "exact", sa == sb, True))
        for fig, rel in RELATIVE.items():
            va, vb = a.metrics[fig], b.metrics[fig]
            ok = abs(va - vb) <= rel * max(abs(va), 1)
            checks.append(Check(cell, fig, va, vb, f"±{rel:.1%}", ok, False))
        acc_a, acc_b = a.metrics["accuracy"], b.metrics["accuracy"]
        if _same_machine(a, b):
            tol, why = SAME_MACHINE_ACCURACY, "same CPU: deterministic"
        else:
            tol = max(SEED_SIGMAS * sigma.get(key[:4], 0.0), ACCURACY_FLOOR)
            why = f"other CPU: {SEED_SIGMAS:g}σ of seeds (σ={sigma.get(key[:4], 0.0):.4f}), floor {ACCURACY_FLOOR}"
        checks.append(Check(cell, "accuracy", round(acc_a, 6), round(acc_b, 6), f"±{tol:.4g} ({why})",
                            abs(acc_a - acc_b) <= tol, False))
        cor_a, cor_b = a.metrics.get("mean_corrupted_accuracy"), b.metrics.get("mean_corrupted_accuracy")
        if cor_a is not None and cor_b is not None:   # the same corrupted inputs: held to accuracy's tolerance
            checks.append(Check(cell, "corrupted accuracy", round(cor_a, 6), round(cor_b, 6), f"±{tol:.4g} ({why})",
                                abs(cor_a - cor_b) <= tol, False))
        runtime = a.metrics.get("runtime", "eager")
        for batch in ("b1", "bn"):
            ba = a.metrics.get("speedup", {}).get(runtime, {}).get(batch)
            bb = b.metrics.get("speedup", {}).get(runtime, {}).get(batch)
            if ba and bb and a.family != "baseline":
                (al, ah), (bl, bh) = widened(ba["low"], ba["high"]), widened(bb["low"], bb["high"])
                ok = al <= bh and bl <= ah
                checks.append(Check(cell, f"speedup {batch} ({runtime})", f"{ba['ratio']:.2f} [{ba['low']:.2f}–{ba['high']:.2f}]",
                                    f"{bb['ratio']:.2f} [{bb['low']:.2f}–{bb['high']:.2f}]",
                                    f"bands ±{RUN_TO_RUN_SPEEDUP:.0%} overlap", ok, False))
    only = [f"only in reference: {_label(ref_by[k])}" for k in sorted(set(ref_by) - set(new_by))]
    only += [f"only in new run: {_label(new_by[k])}" for k in sorted(set(new_by) - set(ref_by))]
    return checks, only


def markdown(checks: list[Check], only: list[str], ref_dir: Path, new_dir: Path, wall_seconds: float | None) -> str:
    exact_bad = [c for c in checks if c.exact and not c.ok]
    loose_bad = [c for c in checks if not c.exact and not c.ok]
    lines = ["# Reproduction: committed records beside a fresh run", "",
             f"Reference: `{ref_dir}`; new run: `{new_dir}`" + (f" ({wall_seconds / 60:.1f} min)" if wall_seconds else "")
             + ".", "",
             f"{len({c.cell for c in checks})} cells compared, {len(checks)} figures: "
             f"{sum(c.ok for c in checks)} equal or within tolerance, {len(exact_bad)} exact figures differ, "
             f"{len(loose_bad)} outside tolerance.", "",
             "Tolerances: exact for parameters, multiply-adds, requested settings and a pruning method's achieved "
             "sparsity; ±0.5 % non-zero parameters, ±2 % stored and gzip bytes; accuracy equal to 1e-6 on the same "
             "CPU model and instruction sets (training is deterministic there), otherwise within 3σ of the seeds "
             "(floor 0.5 points); speedup bands, each widened by the run-to-run spread of speedups measured on this kind of "
             f"machine (±{RUN_TO_RUN_SPEEDUP:.0%}, harness/stats.py), must overlap.", ""]
    if only:
        lines += ["Cells in one folder only:", ""] + [f"- {o}" for o in only] + [""]
    rows = [[c.cell, c.figure, c.reference, c.new, c.tolerance, c.verdict] for c in checks]
    lines += [tabulate(rows, headers=["cell", "figure", "reference", "new", "tolerance", "verdict"], tablefmt="github"), ""]
    return "\n".join(lines)


def compare_dirs(ref_dir: Path, new_dir: Path, out: Path | None = None, wall_seconds: float | None = None
                 ) -> tuple[list[Check], list[str]]:
    for d in (ref_dir, new_dir):
        if not (Path(d) / "runs").is_dir():
            raise SlimbenchError(f"{d} has no runs/ folder of records")
    checks, only = compare_records(load_records(Path(ref_dir) / "runs"), load_records(Path(new_dir) / "runs"))
    if not checks:
        raise SlimbenchError(f"{ref_dir} and {new_dir} have no cell in common (same task, model, method, params, seed)")
    if out is not None:
        atomic_write_text(out, markdown(checks, only, ref_dir, new_dir, wall_seconds))
    return checks, only
