"""`slimbench` command line: run suites, rebuild reports, list what is registered. This module parses the arguments,
pins the CPU kernels before torch loads and picks the command; harness/commands.py does the work.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from slimbench.core.errors import SlimbenchError
from slimbench.harness import commands

log = logging.getLogger("slimbench")

EPILOG = """examples:
  slimbench list methods 'prune.*'        registered methods matching a pattern
  slimbench run quick                     run (or resume) the shipped quick suite, then rebuild its report
  slimbench run my_suite.yaml --import my_methods.py    a suite that uses your own method file
  slimbench report results/quick          rebuild leaderboard.md/.csv and Pareto plots from run records
  slimbench export results results/dataset   every run record of every suite as one Parquet/CSV table + card
  slimbench reproduce quick               rerun every quick cell afresh, compare with results/quick -> reproduction.md
  slimbench compare results/quick other/quick    the same comparison for any two result folders
  slimbench plan quick                    done / failed / pending cells, estimated remaining time
  slimbench bench-fit --model mobilenetv2 Lightning training vs a bare PyTorch loop doing the same work
  slimbench run prune --shard 0/4         one of 4 processes (or SLURM array tasks) sharing a results folder
  slimbench run standard --executor ray   every cell a Ray task (local instance; --address for a cluster)
  slimbench replicate                     published claims beside our measurements -> results/replication.md
  slimbench site results docs             the results as a static web site (open docs/index.html, no server)

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
                     help="Weights & Biases mode (default offline: no key or network needed; logs in "
                          "RESULTS/<suite>/wandb)")
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
                                     "finished cells of the same model and method (else method, else baseline vs "
                                     "method cells).")
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

    exp = sub.add_parser("export", help="every run record under RESULTS as one flat table: OUT/runs.parquet, "
                                        "runs.csv and a dataset card (README.md)",
                         description="One row per cell of every suite under RESULTS (results/<suite>/runs/*.json): "
                                     "suite, run_id, status, task, model, method, seed, the method's parameters "
                                     "(JSON and one param.<name> column each where scalar), every figure (accuracy, "
                                     "sizes, MACs, latency and speedup bands per runtime, the reference baseline's "
                                     "figures, robustness, the measured labels) and provenance (commit, package "
                                     "versions, CPU, kernels). The card lists every column with its meaning and the "
                                     "rows per suite; load it with datasets.load_dataset(\"parquet\", "
                                     "data_files=\"OUT/runs.parquet\"). The same records give the same bytes.")
    exp.add_argument("results", type=Path, metavar="RESULTS",
                     help="a results root holding <suite>/runs folders (e.g. results), or one suite's folder")
    exp.add_argument("out", type=Path, nargs="?", default=None, metavar="OUT",
                     help="folder for runs.parquet, runs.csv and README.md (default: RESULTS/dataset)")

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

    site = sub.add_parser("site", help="the results as a static web site: leaderboards, Pareto plots, replication "
                                       "and reproduction pages, every figure linked to its run record",
                          description="Reads every RESULTS/<suite>/runs folder (the leaderboard's own rows and noise "
                                      "marks) and the claims file, and writes OUT/index.html (the headline: each "
                                      "method family's best setting, and each task's Pareto plot), OUT/tasks, "
                                      "methods and suites/<name>.html, replication.html, reproduction.html and a "
                                      "copy of every record under OUT/records. Relative links only: it opens from "
                                      "the file system. The same records give the same bytes; files an earlier "
                                      "build left in OUT and this one did not write are removed.")
    site.add_argument("results", type=Path, metavar="RESULTS", help="results root holding <suite>/runs folders")
    site.add_argument("out", type=Path, metavar="OUT", help="the site's folder (new, empty, or an earlier build's)")
    site.add_argument("--claims", type=Path, default=None,
                      help="claims file for the replication page (default: the shipped configs/claims.yaml)")
    _add_import(site)

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
    lst.add_argument("kind", choices=["models", "tasks", "methods", "runtimes"])
    lst.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'quant.*'")
    _add_import(lst)
    return p


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = _parser().parse_args(argv)
    pin_kernels(args.native_kernels, argv)
    try:
        if args.command == "list":
            return commands.cmd_list(args.kind, args.pattern, args.imports)
        if args.command == "compare":
            return commands.cmd_compare(args.reference, args.new, args.out)
        if args.command == "bench-fit":
            return commands.cmd_bench_fit(args)
        if args.command == "bench-latency":
            return commands.cmd_bench_latency(args)
        if args.command == "plan":
            return commands.cmd_plan(args)
        if args.command == "reproduce":
            return commands.cmd_reproduce(args)
        if args.command == "replicate":
            return commands.cmd_replicate(args)
        if args.command == "site":
            return commands.cmd_site(args)
        if args.command == "report":
            return commands.cmd_report(args)
        if args.command == "export":
            return commands.cmd_export(args)
        return commands.cmd_run(args)
    except SlimbenchError as exc:
        print(f"slimbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimbench: interrupted; finished cells are recorded, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
