"""`slimbench` command line: run suites, rebuild reports, list what is registered."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from slimbench.core.errors import SlimbenchError

log = logging.getLogger("slimbench")

EPILOG = """examples:
  slimbench list methods 'prune.*'        registered methods matching a pattern
  slimbench run quick                     run (or resume) the shipped quick suite, then rebuild its report
  slimbench run my_suite.yaml --import my_methods.py    a suite that uses your own method file
  slimbench report results/quick          rebuild leaderboard.md/.csv and Pareto plots from run records
  slimbench reproduce quick               rerun every quick cell afresh, compare with results/quick -> reproduction.md
  slimbench compare results/quick other/quick    the same comparison for any two result folders
  slimbench plan quick                    done / failed / pending cells, estimated remaining time
  slimbench bench-fit --model mobilenetv2 Lightning training vs a bare PyTorch loop doing the same work
  slimbench run prune --shard 0/4         one of 4 processes (or SLURM array tasks) sharing a results folder
  slimbench run standard --executor ray   every cell a Ray task (local instance; --address for a cluster)
  slimbench replicate                     published claims beside our measurements -> results/replication.md

plugins: a package of yours registers methods, tasks or models through the `slimbench.plugins` entry-point
group (loaded automatically), or name modules / .py files with --import or a suite's `imports:` list.
"""


def _add_executor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=["serial", "ray"], default="serial",
                        help="serial: one cell after another in this process (default); ray: each cell a Ray task "
                             "with the suite's `resources:` (baselines and teachers first), on a local Ray instance "
                             "or the cluster at --address (needs slimbench[ray])")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="with --executor ray: join this Ray cluster (e.g. auto, or ray://head:10001) instead of "
                             "starting a local instance; results and cache must be on a path every worker sees")
    parser.add_argument("--ray-cpus", type=int, default=None, metavar="N",
                        help="with --executor ray and no --address: CPUs of the local Ray instance (default: all)")


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import a module (by name) or a .py file that registers methods, tasks or models; "
                        "repeatable")


def _devices(text: str) -> int | str:
    """`--devices 2` → 2; `--devices auto` stays a string (Lightning takes both)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slimbench",
        description="Reproducible benchmarks of neural-network compression: every method × task × model, "
                    "measured for accuracy, size, compute and CPU latency.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--native-kernels", action="store_true",
                   help="compute with this CPU's own kernels instead of pinning training, calibration and evaluation "
                        "to AVX2 (the default, so the same seed gives the same figures on any x86-64 CPU); records "
                        "say which ran. Latency is always measured with the native kernels")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a suite file; finished cells are skipped, so an interrupted run resumes",
                         description="Expand the suite's task × model × method × seed grid, train each baseline once "
                                     "(cached), apply each method, measure it and write one JSON record per cell.")
    run.add_argument("suite", type=Path, help="suite YAML file (e.g. configs/quick.yaml) or a shipped suite's name "
                                              "(quick, full, ...)")
    run.add_argument("--results", type=Path, default=Path("results"),
                     help="results root; records go to RESULTS/<suite>/runs (default: results)")
    run.add_argument("--cache", type=Path, default=None,
                     help="trained-model cache (default: RESULTS/.cache/models)")
    run.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline",
                     help="Weights & Biases mode (default offline: no key or network needed; logs in RESULTS/<suite>/wandb)")
    run.add_argument("--only", default=None, metavar="GLOB",
                     help="run only cells whose label matches, e.g. 'fashion-mnist/mobilenetv2/prune.*'")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only shard I of N (0-based); a cell's shard depends on its run_id alone, so N processes "
                          "or SLURM array tasks (--shard $SLURM_ARRAY_TASK_ID/N) share one results folder safely")
    _add_executor(run)
    run.add_argument("--devices", type=_devices, default=1, metavar="N",
                     help="Lightning devices per training run (default 1; an integer or 'auto')")
    run.add_argument("--strategy", default="auto",
                     help="Lightning strategy for training runs, e.g. ddp (default auto)")
    run.add_argument("--num-nodes", type=int, default=1, metavar="K",
                     help="Lightning nodes per training run (default 1); with --devices and --strategy ddp a long "
                          "cell trains on several GPUs or machines. Not part of any run_id")
    run.add_argument("--dry-run", action="store_true", help="list the cells and whether each is done, run nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    run.add_argument("--allow-dirty", action="store_true",
                     help="run from a source tree with uncommitted changes (records are marked dirty; reports flag "
                          "them); by default a record must name the exact commit that produced it")
    _add_import(run)

    pln = sub.add_parser("plan", help="a suite's cells: done, failed, pending, and the estimated remaining time",
                         description="Reads the suite's records; the remaining time is the median wall time of "
                                     "finished cells of the same model and method (else method, else baseline vs method cells).")
    pln.add_argument("suite", type=Path, help="suite file or shipped suite name")
    pln.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
    pln.add_argument("--shard", default=None, metavar="I/N", help="only the cells of this shard")
    _add_import(pln)

    rep = sub.add_parser("report", help="rebuild leaderboard.md, leaderboard.csv and pareto_<task>.png from records")
    rep.add_argument("suite_dir", type=Path, help="a suite's results folder, e.g. results/quick")
    rep.add_argument("--suite", type=Path, default=None,
                     help="suite file whose cells alone enter the tables (records of cells it no longer has, "
                          "e.g. from an older budget, stay on disk but out of the leaderboard); default: all records")
    _add_import(rep)

    cmp = sub.add_parser("compare", help="compare two result folders figure by figure, with tolerances and verdicts",
                         description="Check NEW against REFERENCE: exact figures (params, MACs, requested settings, "
                                     "achieved sparsity), small tolerances (non-zero params, stored bytes), accuracy "
                                     "within the seeds' spread (equal on the same CPU), overlapping speedup bands. "
                                     "Exits 1 if an exact figure differs.")
    cmp.add_argument("reference", type=Path, help="results folder of the reference, e.g. results/quick")
    cmp.add_argument("new", type=Path, help="results folder of the new run")
    cmp.add_argument("--out", type=Path, default=None, help="write the table here (Markdown)")

    rpr = sub.add_parser("reproduce", help="run a suite afresh (committed records are the reference, never a reason "
                                           "to skip) and write RESULTS/<suite>/reproduction.md",
                         description="Runs every cell of the suite into a scratch folder with its own empty model "
                                     "cache, then compares it with RESULTS/<suite>. The scratch folder is named by "
                                     "the git commit, so an interrupted reproduction resumes and a new commit "
                                     "starts afresh.")
    rpr.add_argument("suite", type=Path, help="suite file or shipped suite name, e.g. quick")
    rpr.add_argument("--results", type=Path, default=Path("results"), help="results root holding the reference")
    rpr.add_argument("--scratch", type=Path, default=None,
                     help="where the fresh run goes (default: RESULTS/.reproduce/<commit>)")
    rpr.add_argument("--wandb", choices=["offline", "online", "disabled"], default="disabled")
    _add_executor(rpr)
    rpr.add_argument("--allow-dirty", action="store_true", help="as for run")
    _add_import(rpr)

    rpl = sub.add_parser("replicate", help="published claims beside our measurements, with verdicts -> "
                                           "results/replication.md",
                         description="Evaluate every claim of configs/claims.yaml: architecture counts on the model "
                                     "built at the paper's input size, relational claims on the run records of every "
                                     "suite folder under RESULTS (leaderboard rows, seed spread), full-scale claims "
                                     "as the command that measures them. Writes one Markdown table atomically; the "
                                     "same records give the same bytes.")
    rpl.add_argument("--results", type=Path, default=Path("results"),
                     help="results root whose <suite>/runs folders are read (default: results)")
    rpl.add_argument("--out", type=Path, default=None, help="where the table goes (default: RESULTS/replication.md)")
    rpl.add_argument("--claims", type=Path, default=None,
                     help="claims file (default: the shipped configs/claims.yaml)")
    _add_import(rpl)

    bfit = sub.add_parser("bench-fit", help="time the harness's Lightning training against a bare PyTorch loop "
                                            "doing the same work (the overhead Lightning adds)",
                          description="Same model init, data loader, batches, optimizer, one-cycle schedule, loss, "
                                      "channels-last layout and one validation pass; the two paths alternate in one "
                                      "process. Prints both times and their ratio (goal ≤ 1.10×).")
    bfit.add_argument("--task", default="fashion-mnist", help="registered task (default fashion-mnist)")
    bfit.add_argument("--model", default="mobilenetv2", help="registered model (default mobilenetv2)")
    bfit.add_argument("--batches", type=int, default=40, help="training batches per timed run (default 40)")
    bfit.add_argument("--batch-size", type=int, default=128)
    bfit.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    bfit.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    bfit.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")

    blat = sub.add_parser("bench-latency", help="measured speedup against batch size and runtime for a suite's "
                                                "compressed models, beside their MACs ratio",
                          description="Reloads each matching record's artifact and its same-seed baseline's, deploys "
                                      "both in eager and ONNX Runtime, and times them in the same interleaved rounds "
                                      "at every batch size. Writes latency_batch_<name>.json/.md/.png into the suite "
                                      "folder: MACs ratio against measured speedup per runtime and batch.")
    blat.add_argument("suite_dir", type=Path, help="a suite's results folder with its artifacts, e.g. results/prune")
    blat.add_argument("--method", default="prune.channel", help="method name or glob (default prune.channel)")
    blat.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64], help="batch sizes (default 1 8 64)")
    blat.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: every seed)")
    blat.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    blat.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timed blocks per round (default 0.3)")
    blat.add_argument("--threads", type=int, default=1, help="intra-op threads while timing (default 1)")
    blat.add_argument("--name", default=None, help="output name (default: the method, dots as underscores)")

    lst = sub.add_parser("list", help="list registered models, tasks or methods with a one-line description")
    lst.add_argument("kind", choices=["models", "tasks", "methods"])
    lst.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'quant.*'")
    _add_import(lst)
    return p


def cmd_list(kind: str, pattern: str, imports: list[str]) -> int:
    from slimbench.harness.run.suite import load_imports

    load_imports(imports, "--import", Path.cwd())
    if kind == "models":
        from slimbench.baselines import MODELS as registry
    elif kind == "tasks":
        from slimbench.tasks import TASKS as registry
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
    from slimbench.harness.run.records import has_record
    from slimbench.harness.report.build import build_report
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
            done = has_record(runner.paths.runs, cell.run_id)
            print(f"{cell.run_id}  {'done   ' if done else 'pending'}  {cell.label}")
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
    from slimbench.harness.replicate.replication import replicate, summary_sentence
    from slimbench.harness.run.suite import load_imports

    if not args.results.is_dir():
        raise SlimbenchError(f"results folder {args.results} does not exist")
    load_imports(args.imports, "--import", Path.cwd())
    out = args.out or args.results / "replication.md"
    lines = replicate(args.results, out, args.claims)
    print(f"{summary_sentence(lines)} -> {out}")   # the sentence that heads the file, from the same function
    return 0


def pin_kernels(native: bool, argv: list[str] | None) -> None:
    """Fix the CPU kernels before torch loads (children, Ray workers and shards inherit the environment). Run as a
    command with torch already imported, the process starts again with the pins. Called as a function (`argv`
    given: tests, notebooks) it changes nothing, neither this process's kernels nor the environment its children
    inherit, so everything it runs computes alike; its records say which kernels that was."""
    from slimbench.core import kernels

    if argv is not None:
        return
    wanted = kernels.pin(os.environ, native=native)
    if "torch" not in sys.modules:
        log.info("kernels: %s (%s)", wanted.numerics, wanted.reason)
        return
    if kernels.current().numerics != wanted.numerics and os.environ.get("SLIMBENCH_REEXEC") != "1":
        os.environ["SLIMBENCH_REEXEC"] = "1"   # once: a process that loads torch at start-up keeps what it has
        os.execv(sys.executable, [sys.executable, "-m", "slimbench", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = _parser().parse_args(argv)
    pin_kernels(args.native_kernels, argv)
    try:
        if args.command == "list":
            return cmd_list(args.kind, args.pattern, args.imports)
        if args.command == "compare":
            return cmd_compare(args.reference, args.new, args.out)
        if args.command == "bench-fit":
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
        if args.command == "bench-latency":
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
        if args.command == "plan":
            from slimbench.harness.run.plan import make_plan, plan_text
            from slimbench.harness.run.shards import parse_shard
            from slimbench.harness.run.suite import load_suite

            suite = load_suite(args.suite, imports=args.imports)
            plan = make_plan(suite, args.results / suite.name / "runs", parse_shard(args.shard) if args.shard else None)
            print(plan_text(suite, plan))
            return 0
        if args.command == "reproduce":
            return cmd_reproduce(args)
        if args.command == "replicate":
            return cmd_replicate(args)
        if args.command == "report":
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
        return cmd_run(args)
    except SlimbenchError as exc:
        print(f"slimbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimbench: interrupted; finished cells are recorded, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
