"""Executors: how a suite's pending cells run.

`SerialExecutor` runs them one after another in this process (the default). `RayExecutor` runs each cell as a Ray
task, on a local Ray instance or an existing cluster (`--address`): the baselines and teachers the cells need are a
first stage (one task per distinct task × model × train budget × seed, trained once into the shared model cache),
and each method cell starts when its baselines are ready. Workers rebuild a `SuiteRunner` from the suite file and
the results and cache paths, so those paths must be on a filesystem every worker sees. A cell's outcome is the same
whichever executor ran it: a record per cell, failed cells recorded with their error, a rerun retrying them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from slimbench.baselines.training import Devices, current_devices, set_devices
from slimbench.core.errors import SlimbenchError
from slimbench.harness.run.plan import WallTimes
from slimbench.harness.run.records import has_record, unmeasured_reason
from slimbench.harness.run.suite import Cell, Suite, load_suite

log = logging.getLogger("slimbench")

# A SuiteRunner: harness.runner sits above this module (it picks the executor), so the type is not imported here and
# workers rebuild the driver's runner from its class, passed in the WorkerContext.
SuiteRunner = Any


@dataclass
class SuiteOutcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

EXECUTORS = ("serial", "ray")


@dataclass
class CellResult:
    """What a cell's run tells the driver: its record is already written (ok or failed) by whoever ran it."""

    run_id: str
    label: str
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)   # accuracy, stored bytes, latency: the log line


def run_one(runner: SuiteRunner, cell: Cell) -> CellResult:
    """Run one cell; a failure becomes a failed record, never an exception (one broken cell must not lose the rest)."""
    try:
        record = runner.run_cell(cell)
    except SlimbenchError as exc:
        log.error("cell %s failed: %s", cell.label, exc)
        error = str(exc)
    except Exception as exc:
        log.exception("cell %s crashed", cell.label)
        error = f"{exc.__class__.__name__}: {exc}"
    else:
        m = record.metrics
        if m is None:   # the method declared it cannot apply to the model
            return CellResult(cell.run_id, cell.label, summary={"not_applicable": unmeasured_reason(record)})
        return CellResult(cell.run_id, cell.label, summary={
            "accuracy": m.accuracy, "stored_bytes": m.stored_bytes, "latency_b1_ms": m.latency_b1_ms})
    runner.record_failure(cell, error)
    return CellResult(cell.run_id, cell.label, error=error)


def _count(outcome: SuiteOutcome, result: CellResult) -> None:
    if result.error is not None:
        outcome.failed[result.label] = result.error
        return
    outcome.done.append(result.run_id)
    s = result.summary
    if "not_applicable" in s:
        log.info("%s: n/a (%s)", result.label, s["not_applicable"])
        return
    log.info("%s: accuracy %.4f, stored %d B, %.2f ms (b1)", result.label, s["accuracy"], s["stored_bytes"],
             s["latency_b1_ms"])


def _postfix(outcome: SuiteOutcome, current: str = "") -> str:
    text = f"{len(outcome.done)} done, {len(outcome.failed)} failed, {len(outcome.skipped)} skipped"
    return text + (f" | {current}" if current else "")


class Executor(Protocol):
    def run(self, runner: SuiteRunner, cells: list[Cell]) -> SuiteOutcome: ...


class SerialExecutor:
    """One cell after another in this process."""

    def run(self, runner: SuiteRunner, cells: list[Cell]) -> SuiteOutcome:
        from slimbench.core import kernels

        if kernels.current().pinned:   # threads change reduction order: pinned runs use a cell's `cpus`, as on Ray
            import torch

            torch.set_num_threads(max(1, int(runner.suite.resources.cpus)))
        outcome = SuiteOutcome()
        bar = tqdm(cells, desc=f"suite {runner.suite.name}", unit="cell", disable=not runner.progress)
        start = time.perf_counter()
        for i, cell in enumerate(bar):
            bar.set_postfix_str(_postfix(outcome, cell.label))
            if has_record(runner.paths.runs, cell.run_id):
                outcome.skipped.append(cell.run_id)
                continue
            if not runner.progress and outcome.done:   # the same summary in the log when bars are off
                per_cell = (time.perf_counter() - start) / (len(outcome.done) + len(outcome.failed))
                log.info("suite %s: cell %d/%d (%d done, %d failed, %d skipped), about %.0f min left at most",
                         runner.suite.name, i + 1, len(cells), len(outcome.done), len(outcome.failed),
                         len(outcome.skipped), per_cell * (len(cells) - i) / 60)
            _count(outcome, run_one(runner, cell))
        return outcome


# -- Ray ------------------------------------------------------------------------------------------------------------
@dataclass
class WorkerContext:
    """Everything a worker needs to rebuild the driver's runner: paths absolute, the source state the driver checked."""

    key: str                       # one driver run: a worker reuses its runner (and loaded tasks) within it
    suite: Suite                   # used as is when the suite has no file a worker can read
    suite_path: str | None
    imports: list[str]
    cwd: str
    results_root: str
    cache_root: str
    wandb_mode: str
    source: dict[str, Any]
    devices: Devices
    threads: int
    runner_class: type               # the driver's SuiteRunner class, importable in every worker


_WORKER_RUNNERS: dict[str, tuple[SuiteRunner, dict[str, Cell]]] = {}


def _worker_runner(ctx: WorkerContext) -> tuple[SuiteRunner, dict[str, Cell]]:
    """The runner of this driver run in this worker process, built once (Ray reuses worker processes)."""
    if ctx.key not in _WORKER_RUNNERS:
        import torch

        os.environ["SLIMBENCH_PROGRESS"] = "0"   # no per-epoch bars from workers; the driver shows the overall one
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                                datefmt="%H:%M:%S")
        if ctx.cwd not in sys.path and Path(ctx.cwd).is_dir():
            sys.path.append(ctx.cwd)   # `--import my_module` resolves as it did in the driver
        torch.set_num_threads(ctx.threads)
        set_devices(ctx.devices)
        suite = ctx.suite
        if ctx.suite_path is not None and Path(ctx.suite_path).is_file():   # plugins register in this process too
            suite = load_suite(ctx.suite_path, imports=ctx.imports)
        runner = ctx.runner_class(suite, Path(ctx.results_root), Path(ctx.cache_root), ctx.wandb_mode, progress=False,
                             allow_dirty=True)
        runner.source = ctx.source   # checked once, in the driver
        _WORKER_RUNNERS.clear()
        _WORKER_RUNNERS[ctx.key] = (runner, {c.run_id: c for c in suite.cells})
    return _WORKER_RUNNERS[ctx.key]


def _cell(ctx: WorkerContext, run_id: str) -> tuple[SuiteRunner, Cell]:
    runner, cells = _worker_runner(ctx)
    if run_id not in cells:
        raise SlimbenchError(f"cell {run_id} is not in the suite as this worker reads it; was the suite file edited "
                             f"while the run was going?")
    return runner, cells[run_id]


def train_task(ctx: WorkerContext, run_id: str, role: str) -> str | None:
    """Stage 1: train (or find cached) the baseline or teacher of this cell; returns an error text, never raises,
    so the cells that wait on it still start (and record the failure themselves, as the serial loop would)."""
    try:
        runner, cell = _cell(ctx, run_id)
        model, train = (cell.model, cell.train) if role == "baseline" else (cell.teacher, cell.teacher_train)
        runner.trained(runner.task(cell.task), cell, model, train, role)
        return None
    except Exception as exc:   # noqa: BLE001 - reported by the cells that need this model
        log.exception("training the %s for %s failed", role, run_id)
        return f"{exc.__class__.__name__}: {exc}"


def cell_task(ctx: WorkerContext, run_id: str) -> CellResult:
    """Stage 2: one cell, submitted once its baselines and teacher are trained (see Dispatch)."""
    runner, cell = _cell(ctx, run_id)
    return run_one(runner, cell)


class RayExecutor:
    """Cells as Ray tasks with the suite's `resources:`; a local Ray instance unless `address` names a cluster."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, imports: list[str] | None = None,
                 estimate_from: list[Path] | None = None):
        self.address, self.num_cpus, self.imports = address, num_cpus, list(imports or [])
        self.estimate_from = list(estimate_from or [])   # other run folders whose wall times order the work

    def _init(self) -> bool:
        """Start or join Ray; True when this executor started it (and so shuts it down)."""
        try:
            import ray
        except ImportError:
            raise SlimbenchError("--executor ray needs Ray: pip install 'slimbench[ray]' (or pip install 'ray>=2.9')"
                                 ) from None
        if ray.is_initialized():   # the caller (a test, a notebook) already chose the instance
            return False
        if self.address:
            ray.init(address=self.address, log_to_driver=True)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=True)
        return True

    def _context(self, runner: SuiteRunner) -> WorkerContext:
        suite, cwd = runner.suite, Path.cwd()
        path = Path(str(suite.path)).resolve() if suite.path is not None else None
        imports = [str((cwd / s).resolve()) if (s.endswith(".py") or "/" in s) and not Path(s).is_absolute() else s
                   for s in self.imports]
        return WorkerContext(
            key=uuid.uuid4().hex, suite=suite, suite_path=str(path) if path and path.is_file() else None,
            imports=imports, cwd=str(cwd), results_root=str(runner.paths.root.parent.resolve()),
            cache_root=str(runner.cache.root.resolve()), wandb_mode=runner.tracker.mode, source=runner.source,
            devices=current_devices(), threads=max(1, int(suite.resources.cpus)), runner_class=type(runner))

    def run(self, runner: SuiteRunner, cells: list[Cell]) -> SuiteOutcome:
        import ray  # noqa: F401 - checked by _init first

        started = self._init()
        try:
            return self._run(runner, cells)
        finally:
            if started:
                ray.shutdown()

    def _run(self, runner: SuiteRunner, cells: list[Cell]) -> SuiteOutcome:
        import ray

        from slimbench.methods import build_method

        outcome = SuiteOutcome()
        pending = []
        for cell in cells:
            if has_record(runner.paths.runs, cell.run_id):
                outcome.skipped.append(cell.run_id)
            else:
                pending.append(cell)
        res = runner.suite.resources
        options: dict[str, Any] = {"num_cpus": res.cpus, "num_gpus": res.gpus, "max_retries": 0}
        if res.memory_gb:
            options["memory"] = int(res.memory_gb * 2**30)
        ctx = ray.put(self._context(runner))
        # stage 1: each baseline / teacher that is not cached yet, once; stage 2: each cell once its models are trained
        trains: dict[Path, tuple[Cell, str]] = {}
        needs: dict[str, set[Path]] = {}
        for cell in pending:
            roles = [("baseline", cell.model, cell.train)]
            if build_method(cell.method.name, cell.method.params).uses_teacher:
                roles.append(("teacher", cell.teacher, cell.teacher_train))
            needs[cell.run_id] = set()
            for role, model, train in roles:
                path = runner.cache.path(cell.task, model, train, cell.seed)
                if not path.exists():
                    trains.setdefault(path, (cell, role))
                    needs[cell.run_id].add(path)
        # estimates from this folder's finished cells and any given reference (a reproduction's committed records)
        times = WallTimes.read([runner.paths.runs, *self.estimate_from])
        queue = Dispatch(trains, pending, needs, times)
        slots = ray_slots(res.cpus, res.gpus)
        log.info("suite %s on Ray: %d cells (%d already done), %d baselines/teachers to train first; %d at a time",
                 runner.suite.name, len(pending), len(outcome.skipped), len(trains), slots)
        bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc=f"suite {runner.suite.name}", unit="cell",
                   disable=not runner.progress)
        start = time.perf_counter()
        running: dict[Any, tuple[str, Any]] = {}
        try:
            while queue or running:
                while len(running) < slots and (item := queue.next()) is not None:
                    kind, what = item
                    if kind == "train":
                        cell, role = trains[what]
                        ref: Any = ray.remote(train_task).options(**options).remote(ctx, cell.run_id, role)
                    else:
                        ref = ray.remote(cell_task).options(**options).remote(ctx, what.run_id)
                    running[ref] = item
                ready, _ = ray.wait(list(running), num_returns=1)
                kind, what = running.pop(ready[0])
                if kind == "train":
                    queue.trained(what)   # failed or not: its cells run and record what happened
                    continue
                cell = what
                try:
                    result = ray.get(ready[0])
                except Exception as exc:   # the worker died (killed, out of memory) or the task could not run
                    error = f"Ray task failed: {exc.__class__.__name__}: {str(exc)[:2000]}"
                    log.error("cell %s failed: %s", cell.label, error)
                    runner.record_failure(cell, error)
                    result = CellResult(cell.run_id, cell.label, error=error)
                _count(outcome, result)
                bar.update(1)
                bar.set_postfix_str(_postfix(outcome, cell.label))
                if not runner.progress and (queue or running):
                    finished = len(outcome.done) + len(outcome.failed)
                    per_cell = (time.perf_counter() - start) / finished
                    left = len(pending) - finished
                    log.info("suite %s: %d/%d cells finished (%d done, %d failed, %d skipped), about %.0f min left "
                             "at most", runner.suite.name, finished + len(outcome.skipped), len(cells),
                             len(outcome.done), len(outcome.failed), len(outcome.skipped),
                             per_cell * left / min(slots, max(left, 1)) / 60)
        finally:
            bar.close()
            for ref in running:   # interrupted: nothing keeps running on the cluster for a driver that is gone
                try:
                    ray.cancel(ref, force=True)
                except Exception:   # noqa: BLE001 - already finished, or Ray is going down anyway
                    pass
        return outcome


def ray_slots(cpus: float, gpus: float) -> int:
    """How many cells the cluster runs at once with these per-cell resources (at least one)."""
    import ray

    total = ray.cluster_resources()
    fits = [total.get("CPU", 0.0) / cpus] if cpus > 0 else []
    if gpus > 0:
        fits.append(total.get("GPU", 0.0) / gpus)
    return max(1, int(min(fits))) if fits else 1


class Dispatch:
    """The order work is handed to Ray: every baseline before any teacher, then each cell once its models exist;
    longest first where `times` knows the work (longest-processing-time first: the long cells start early and the
    short ones fill the gaps at the end, instead of one long cell running alone while the other workers idle).

    Ray runs whichever queued task a free worker takes first, not the first submitted (on the quick suite a
    teacher and the cells of finished baselines ran ahead of the keyword baseline, whose cells then ran alone at
    the end), so tasks are submitted only as workers free up: Ray places them, this queue decides which is next.
    """

    def __init__(self, trains: dict[Path, tuple[Cell, str]], cells: list[Cell], needs: dict[str, set[Path]],
                 times: WallTimes | None = None):
        times = times if times is not None else WallTimes()   # (an empty one is falsy, yet may know trainings)

        def train_order(path: Path) -> tuple[bool, float]:
            # a baseline unblocks all of its task's cells, a teacher only the distillation ones
            return trains[path][1] != "baseline", -(times.train_estimate(path) or 0.0)

        def cell_order(cell: Cell) -> float:
            known = times.estimate(cell)
            return -(known[0] if known else 0.0)

        self.trains = sorted(trains, key=train_order)             # stable: the suite's order among equals
        self.cells = sorted(cells, key=cell_order)
        self.waiting = {p: set(ps) for p, ps in ((c.run_id, needs[c.run_id]) for c in cells)}

    def __bool__(self) -> bool:
        return bool(self.trains or self.cells)

    def next(self) -> tuple[str, Any] | None:
        if self.trains:
            return "train", self.trains.pop(0)
        for i, cell in enumerate(self.cells):
            if not self.waiting[cell.run_id]:
                return "cell", self.cells.pop(i)
        return None

    def trained(self, path: Path) -> None:
        for left in self.waiting.values():
            left.discard(path)


def make_executor(name: str, address: str | None = None, num_cpus: int | None = None,
                  imports: list[str] | None = None, estimate_from: list[Path] | None = None) -> Executor:
    if name == "serial":
        if address is not None:
            raise SlimbenchError("--address names a Ray cluster; use it with --executor ray")
        return SerialExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus, imports, estimate_from)
    raise SlimbenchError(f"unknown executor {name!r}; valid executors: {', '.join(EXECUTORS)}")
