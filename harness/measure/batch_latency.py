"""`slimbench bench-latency`: measured speedup against batch size and runtime for a suite's compressed models, beside
their MACs ratio: the plot that answers "my pruned model has half the MACs, why is it not twice as fast".

Each record's saved artifact and its same-seed baseline's are reloaded (`weights_only`), deployed in every runtime,
and timed in the same interleaved rounds (deploy/latency.py), so a ratio compares like with like in one process.
Written by hand: the question is about our own artifacts and runtimes, which no benchmarking library knows.
"""

from __future__ import annotations

import fnmatch
import io
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from slimbench.core.errors import SlimbenchError
from slimbench.harness.run.records import RunRecord, atomic_write_bytes, atomic_write_text, load_records


@dataclass
class BatchTiming:
    task: str
    model: str
    method: str
    params: dict[str, Any]
    seed: int
    run_id: str
    macs_ratio: float          # baseline MACs ÷ model MACs, both counted by the harness
    runtime: str
    batch: int
    model_ms: float            # median over rounds
    reference_ms: float
    speedup: float             # reference_ms ÷ model_ms
    low: float                 # lowest and highest per-round ratio: the timing band
    high: float
    rounds: int


def _baseline_for(rec: RunRecord, records: list[RunRecord]) -> RunRecord:
    for b in records:
        if (b.method == "baseline" and b.status == "ok" and b.task == rec.task and b.model == rec.model
                and b.seed == rec.seed and b.config.get("train") == rec.config.get("train")
                and b.config.get("model") == rec.config.get("model")):
            return b
    raise SlimbenchError(f"{rec.run_id} ({rec.task}/{rec.model}/{rec.method}/s{rec.seed}) has no finished baseline "
                         f"record with the same seed and budget in this folder; run the suite's baseline cells first")


def _load(suite_dir: Path, rec: RunRecord, task: Any) -> Any:
    from slimbench.baselines import build_model
    from slimbench.deploy.runtimes import load_artifact

    path = suite_dir / (rec.artifact.path if rec.artifact else "")
    if not rec.artifact or not path.is_file():
        raise SlimbenchError(f"{rec.run_id}: its artifact {path} is missing (artifacts stay on the machine that ran "
                             f"the cell; rerun the cell with `slimbench run` to recreate it)")
    params = rec.config["model"]["params"]
    return load_artifact(path.read_bytes(), lambda: build_model(rec.model, task.spec, task.num_classes, params))


def _macs(rec: RunRecord) -> int:
    if rec.metrics is None:
        raise SlimbenchError(f"run record {rec.run_id} ({rec.status}) was never measured")
    return rec.metrics.macs


def select(records: list[RunRecord], method: str, seeds: list[int] | None) -> list[RunRecord]:
    chosen = [r for r in records if r.status == "ok" and fnmatch.fnmatchcase(r.method, method)
              and r.method != "baseline" and (seeds is None or r.seed in seeds)]
    if not chosen:
        names = sorted({r.method for r in records if r.method != "baseline"})
        raise SlimbenchError(f"no finished record matches method {method!r}; methods in this folder: "
                             f"{', '.join(names) or 'none'}")
    return sorted(chosen, key=lambda r: (r.task, r.model, json.dumps(r.details.get("params_given", {})), r.seed))


def measure(suite_dir: Path, method: str, batches: list[int], seeds: list[int] | None, rounds: int,
            min_run_time: float, threads: int) -> list[BatchTiming]:
    from slimbench.deploy.latency import MeasureConfig, measure_latency, speedup_bands
    from slimbench.tasks import build_task

    records = load_records(suite_dir / "runs")
    chosen = select(records, method, seeds)
    cfg = MeasureConfig(threads=threads, rounds=rounds, min_run_time=min_run_time)
    tasks: dict[str, Any] = {}
    out: list[BatchTiming] = []
    for rec in chosen:
        base = _baseline_for(rec, records)
        key = json.dumps(rec.config["task"], sort_keys=True)
        if key not in tasks:
            tasks[key] = build_task(rec.task, rec.config["task"]["params"])
        task = tasks[key]
        examples = {f"b{n}": task.example_input(n) for n in batches}
        # the cells' own timing path: every runtime, model and baseline in the same interleaved rounds
        latency, _ = measure_latency(_load(suite_dir, rec, task), _load(suite_dir, base, task), "eager", examples, cfg)
        bands = speedup_bands(latency, "eager")
        for runtime, by_batch in bands.items():        # a runtime that cannot run the model has no band
            for batch in batches:
                band = by_batch[f"b{batch}"]
                out.append(BatchTiming(rec.task, rec.model, rec.method, rec.details.get("params_given", {}), rec.seed,
                                       rec.run_id, _macs(base) / _macs(rec), runtime, batch,
                                       latency["model"][runtime][f"b{batch}_ms"],
                                       latency["reference"][runtime][f"b{batch}_ms"], band["ratio"], band["low"],
                                       band["high"], band["rounds"]))
    return out


def _label(t: BatchTiming) -> str:
    return f"{t.model} · {t.method} " + ", ".join(f"{k}={v}" for k, v in t.params.items())


def markdown(timings: list[BatchTiming], threads: int) -> str:
    lines = [f"# Speedup against batch size and runtime ({threads} thread(s))", "",
             "Each compressed model and its same-seed baseline, reloaded from their artifacts and timed in the same "
             "interleaved rounds in one process. Speedup = baseline latency ÷ model latency (median; band = lowest "
             "to highest round ratio). `≥ 0.75× MACs` says whether the measured speedup reaches three quarters of "
             "the MACs ratio.", ""]
    table = [[t.task, _label(t), t.seed, f"{t.macs_ratio:.2f}×", t.runtime, t.batch, f"{t.reference_ms:.3f}",
              f"{t.model_ms:.3f}", f"{t.speedup:.2f}× ({t.low:.2f}–{t.high:.2f})",
              "yes" if t.speedup >= 0.75 * t.macs_ratio else "no"] for t in timings]
    lines.append(tabulate(table, headers=["task", "model · method", "seed", "MACs ratio", "runtime", "batch",
                                          "baseline ms", "model ms", "speedup (band)", "≥ 0.75× MACs"],
                          tablefmt="github"))
    return "\n".join(lines) + "\n"


def plot(timings: list[BatchTiming], path: Path) -> None:
    """MACs ratio (x) against measured speedup (y), one line per runtime × batch; the diagonal is speed = MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, str, int], dict[float, list[BatchTiming]]] = {}
    for t in timings:
        groups.setdefault((t.task, t.model, t.runtime, t.batch), {}).setdefault(round(t.macs_ratio, 2), []).append(t)
    models = sorted({(t.task, t.model) for t in timings})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5.2), squeeze=False)
    for ax, (task, model) in zip(axes[0], models):
        top = 1.0
        for (g_task, g_model, runtime, batch), by_ratio in sorted(groups.items()):
            if (g_task, g_model) != (task, model):
                continue
            xs = sorted(by_ratio)
            ys = [statistics.median(t.speedup for t in by_ratio[x]) for x in xs]
            lo = [min(t.low for t in by_ratio[x]) for x in xs]
            hi = [max(t.high for t in by_ratio[x]) for x in xs]
            ax.errorbar(xs, ys, yerr=[[y - low for y, low in zip(ys, lo)], [h - y for y, h in zip(ys, hi)]],
                        fmt="o-" if runtime == "onnxruntime" else "s--", capsize=3, markersize=4,
                        label=f"{runtime}, batch {batch}")
            top = max(top, *xs, *hi)
        ax.plot([1, top], [1, top], ":", color="grey", label="speedup = MACs ratio")
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xlabel("MACs ratio, baseline ÷ model (counted)")
        ax.set_ylabel("measured speedup, baseline ÷ model latency")
        ax.set_title(f"{task} · {model}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fewer MACs against measured speed, per runtime and batch size (median; bars = round band)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write(suite_dir: Path, name: str, timings: list[BatchTiming], threads: int) -> list[Path]:
    paths = [suite_dir / f"latency_batch_{name}.json", suite_dir / f"latency_batch_{name}.md",
             suite_dir / f"latency_batch_{name}.png"]
    atomic_write_text(paths[0],
                      json.dumps({"threads": threads, "timings": [asdict(t) for t in timings]}, indent=1) + "\n")
    atomic_write_text(paths[1], markdown(timings, threads))
    plot(timings, paths[2])
    return paths
