"""What each `slimbench` command does, once its arguments are parsed (harness/cli.py parses them and pins the CPU
kernels first). Heavy modules are imported inside each command, so `--help` and the kernel pins stay ahead of torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from slimbench.core.errors import SlimbenchError

log = logging.getLogger("slimbench")


def cmd_list(kind: str, pattern: str, imports: list[str]) -> int:
    from slimbench.harness.run.suite import load_imports

    load_imports(imports, "--import", Path.cwd())
    if kind == "models":
        from slimbench.baselines import MODELS as registry
    elif kind == "tasks":
        from slimbench.tasks import TASKS as registry
    elif kind == "runtimes":
        from slimbench.deploy.runtimes import RUNTIMES as registry  # the built-in runtimes register on import
    else:
        from slimbench.methods import METHODS as registry
    entries = registry.entries(pattern)
    if not entries:
        print(f"no {kind} match {pattern!r}; registered: {', '.join(registry.names())}", file=sys.stderr)
        return 1
    width = max(len(e.name) for e in entries)
    for e in entries:
        source = e.source
        origin = f"  [{source['kind']} {source.get('origin', '')}]" if source.get("kind") != "builtin" else ""
        print(f"{e.name:<{width}}  {e.description}{origin}")
    if kind == "models":
        print(f"{'timm/<arch>':<{width}}  any timm architecture, built for the task's input spec")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from slimbench.harness.report.build import build_report
    from slimbench.harness.run.records import NOT_APPLICABLE, has_record, read_record, unmeasured_reason
    from slimbench.harness.run.runner import SuiteRunner
    from slimbench.harness.run.shards import parse_shard
    from slimbench.harness.run.suite import load_suite

    if args.no_progress:
        os.environ["SLIMBENCH_PROGRESS"] = "0"
    suite = load_suite(args.suite, imports=args.imports)
    runner = SuiteRunner(suite, args.results, args.cache, args.wandb, progress=not args.no_progress,
                         allow_dirty=args.allow_dirty or None)
    if args.dry_run:
        for cell in suite.cells:
            path = runner.paths.runs / f"{cell.run_id}.json"
            rec = read_record(path) if has_record(runner.paths.runs, cell.run_id) else None
            state = "pending" if rec is None else "done   " if rec.status == "ok" else "n/a    "
            why = f": {unmeasured_reason(rec)}" if rec is not None and rec.status == NOT_APPLICABLE else ""
            print(f"{cell.run_id}  {state}  {cell.label}{why}")
        return 0
    from slimbench.baselines.training import Devices, set_devices
    from slimbench.harness.run.executors import make_executor

    if args.num_nodes < 1:
        raise SlimbenchError(f"--num-nodes must be ≥ 1, got {args.num_nodes}")
    set_devices(Devices(args.devices, args.strategy, args.num_nodes))
    executor = make_executor(args.executor, args.address, args.ray_cpus, args.imports)
    start = time.perf_counter()
    outcome = runner.run(only=args.only, shard=parse_shard(args.shard) if args.shard else None, executor=executor)
    rows = build_report(runner.paths.root, run_ids={cell.run_id for cell in suite.cells})
    runner.log_leaderboard(rows)
    log.info("suite %s: %d run, %d already done, %d failed in %.1f s; leaderboard: %s",
             suite.name, len(outcome.done), len(outcome.skipped), len(outcome.failed),
             time.perf_counter() - start, runner.paths.root / "leaderboard.md")
    for label, err in outcome.failed.items():
        print(f"FAILED {label}: {err}", file=sys.stderr)
    return 1 if outcome.failed else 0


def cmd_compare(reference: Path, new: Path, out: Path | None, wall_seconds: float | None = None) -> int:
    from slimbench.harness.replicate.compare import compare_dirs, failures, summary_line

    checks, only = compare_dirs(reference, new, out, wall_seconds)
    exact_bad, loose_bad = failures(checks)
    for c in exact_bad + loose_bad:
        print(f"{c.verdict}: {c.cell} {c.figure}: {c.reference} -> {c.new} ({c.tolerance})", file=sys.stderr)
    print(f"{len({c.cell for c in checks})} cells, {len(checks)} figures compared: {len(exact_bad)} exact figures "
          f"differ, {len(loose_bad)} outside tolerance, {len(only)} cells in one folder only"
          + (f"; table -> {out}" if out else ""))
    print(summary_line(checks, only))
    return 1 if exact_bad or loose_bad else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from slimbench.harness.run.environment import git_state
    from slimbench.harness.run.runner import SuiteRunner
    from slimbench.harness.run.suite import load_suite

    suite = load_suite(args.suite, imports=args.imports)
    reference = args.results / suite.name
    if not (reference / "runs").is_dir():
        raise SlimbenchError(f"no committed records to reproduce in {reference}/runs; run `slimbench run` first")
    scratch = args.scratch or args.results / ".reproduce" / ((git_state().get("commit") or "no-commit")[:12])
    runner = SuiteRunner(suite, scratch, scratch / ".cache" / "models", args.wandb, progress=True,
                         allow_dirty=args.allow_dirty or None)
    from slimbench.harness.run.executors import make_executor

    start = time.perf_counter()
    # the committed records' wall times order the work (longest first), cell for cell
    outcome = runner.run(executor=make_executor(args.executor, args.address, args.ray_cpus, args.imports,
                                                estimate_from=[reference / "runs"]))
    wall = time.perf_counter() - start
    from slimbench.harness.report.build import build_report

    build_report(runner.paths.root, run_ids={c.run_id for c in suite.cells})
    log.info("fresh run of %s: %d run, %d already done (an interrupted reproduction resumes), %d failed in %.1f s",
             suite.name, len(outcome.done), len(outcome.skipped), len(outcome.failed), wall)
    code = cmd_compare(reference, runner.paths.root, reference / "reproduction.md", wall if outcome.done else None)
    for label, err in outcome.failed.items():
        print(f"FAILED {label}: {err}", file=sys.stderr)
    return 1 if outcome.failed else code


def cmd_replicate(args: argparse.Namespace) -> int:
    from slimbench.harness.replicate.evaluation import summary_sentence
    from slimbench.harness.replicate.replication import replicate
    from slimbench.harness.run.suite import load_imports

    if not args.results.is_dir():
        raise SlimbenchError(f"results folder {args.results} does not exist")
    load_imports(args.imports, "--import", Path.cwd())
    out = args.out or args.results / "replication.md"
    lines = replicate(args.results, out, args.claims)
    print(f"{summary_sentence(lines)} -> {out}")   # the sentence that heads the file, from the same function
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from slimbench.harness.run.suite import load_imports
    from slimbench.harness.site.build import build_site

    load_imports(args.imports, "--import", Path.cwd())
    files = build_site(args.results, args.out, args.claims)
    pages = sum(name.endswith(".html") for name in files)
    size = sum(len(data) for data in files.values())
    print(f"{pages} pages, {len(files)} files ({size / 2**20:.1f} MiB) -> {args.out / 'index.html'}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from slimbench.harness.run.plan import make_plan, plan_text
    from slimbench.harness.run.shards import parse_shard
    from slimbench.harness.run.suite import load_suite

    suite = load_suite(args.suite, imports=args.imports)
    plan = make_plan(suite, args.results / suite.name / "runs", parse_shard(args.shard) if args.shard else None)
    print(plan_text(suite, plan))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from slimbench.harness.report.build import build_report

    if not (args.suite_dir / "runs").is_dir():
        raise SlimbenchError(f"{args.suite_dir} has no runs/ folder of records; run a suite first")
    from slimbench.harness.run.suite import load_imports, load_suite

    load_imports(args.imports, "--import", Path.cwd())
    run_ids = None
    if args.suite is not None:
        run_ids = {cell.run_id for cell in load_suite(args.suite).cells}
    rows = build_report(args.suite_dir, run_ids=run_ids)
    print(f"{len(rows)} leaderboard rows -> {args.suite_dir / 'leaderboard.md'}, leaderboard.csv")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slimbench.harness.report.export import export

    result = export(args.results, args.out or args.results / "dataset")
    sizes = ", ".join(f"{p.name} ({p.stat().st_size / 1024:.0f} KiB)" for p in result.paths)
    print(f"{result.rows} rows × {len(result.columns)} columns -> {result.out}: {sizes}")
    return 0


def cmd_bench_fit(args: argparse.Namespace) -> int:
    import torch

    from slimbench.baselines.classifier import TrainConfig
    from slimbench.core.params import build_dataclass
    from slimbench.harness.measure.fit_overhead import benchmark_fit
    from slimbench.tasks import build_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batches < 1 or args.repeats < 1:
        raise SlimbenchError("--batches and --repeats must be ≥ 1")
    cfg = build_dataclass(TrainConfig, {"epochs": 1, "batch_size": args.batch_size, "optimizer": args.optimizer,
                                        "max_train_batches": args.batches}, "bench-fit")
    result = benchmark_fit(build_task(args.task, {}), args.model, cfg, repeats=args.repeats)
    print(f"torch threads: {torch.get_num_threads()}")
    print(result.text())
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from slimbench.harness.measure import batch_latency as latency_batch

    if min(args.batches) < 1 or args.rounds < 1 or args.threads < 1 or not args.min_run_time > 0:
        raise SlimbenchError("--batches, --rounds and --threads must be ≥ 1 and --min-run-time > 0")
    if not (args.suite_dir / "runs").is_dir():
        raise SlimbenchError(f"{args.suite_dir} has no runs/ folder of records; run a suite first")
    timings = latency_batch.measure(args.suite_dir, args.method, sorted(set(args.batches)), args.seeds,
                                    args.rounds, args.min_run_time, args.threads)
    name = args.name or args.method.replace(".", "_").replace("*", "all")
    for path in latency_batch.write(args.suite_dir, name, timings, args.threads):
        print(f"wrote {path}")
    print(latency_batch.markdown(timings, args.threads))
    return 0
