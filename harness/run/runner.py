"""Run a suite: every cell not already recorded is trained/loaded, optimised, measured and recorded."""

from __future__ import annotations

import copy
import datetime as dt
import fnmatch
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from torch import nn

from slimbench.baselines import build_model
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import TrainedModel, current_devices, fit
from slimbench.core.errors import SlimbenchError
from slimbench.deploy.counting import count_macs, count_params, peak_memory_bytes, serialized_sizes
from slimbench.deploy.executorch_runtime import ExecutorchModel
from slimbench.deploy.latency import measure_latency, speedup_bands
from slimbench.deploy.onnx_export import OnnxModel
from slimbench.deploy.packing import Packed, pack_state_dict
from slimbench.deploy.runtimes import (
    check_packed,
    check_runtime,
    deploy,
    reference_program_like,
    reference_stored_like,
    stored_form,
    torch_form,
)
from slimbench.deploy.structure import describe
from slimbench.harness.measure.evidence import Evidence, gather
from slimbench.harness.measure.evidence_data import Compression
from slimbench.harness.measure.explanations import ExplainConfig, explain_deployed
from slimbench.harness.measure.figures import Metrics, Reference, SpeedupBand
from slimbench.harness.measure.quality import evaluate_test, robustness
from slimbench.harness.measure.runtime_quality import quality_by_runtime
from slimbench.harness.run.cache import ModelCache
from slimbench.harness.run.environment import git_state, hardware, versions
from slimbench.harness.run.executors import Executor, SerialExecutor, SuiteOutcome
from slimbench.harness.run.record_parts import (
    Artifact,
    BaselineTraining,
    Fit,
    GitState,
    Hardware,
    Provenance,
    WandbRun,
)
from slimbench.harness.run.records import NOT_APPLICABLE, RunRecord, atomic_write_bytes, load_records, write_record
from slimbench.harness.run.shards import in_shard
from slimbench.harness.run.suite import Cell, Named, Suite
from slimbench.harness.run.tracking import Tracker
from slimbench.methods import METHODS, Method, MethodContext, Outcome, Stage, build_method
from slimbench.tasks import Task, build_task
from slimbench.tasks.base import MethodView

if TYPE_CHECKING:
    from slimbench.harness.report.rows import LeaderboardRow

log = logging.getLogger("slimbench")


@dataclass
class SuitePaths:
    root: Path                       # results/<suite>

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"   # W&B itself adds the `wandb/` folder under the suite folder


@dataclass
class Measured:
    """Everything measured about one deployed model beside its reference."""

    metrics: Metrics
    reference: Reference
    packed: Packed
    data: bytes
    evidence: Evidence
    phases: dict[str, float] = field(default_factory=dict)   # seconds per measurement phase (the cell's profile)


class Laps:
    """Wall time per phase of a cell, so a slow suite says where its time goes."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self.last, 2)
        self.last = now


def params_given(cell: Cell) -> dict[str, Any]:
    """The method parameters the suite file set (the rest are defaults): what labels show."""
    return {k: cell.method.params[k] for k in cell.method.given}


def method_context(task: Task, cell: Cell, baseline: TrainedModel, cache: ModelCache, logger: Any = False,
                   log: Callable[[dict[str, Any]], None] | None = None, fits: list[Fit] | None = None
                   ) -> MethodContext:
    """What a method is handed for `cell`, built so that nothing reachable from it holds the test split.

    Hiding `test` by name is not enough when a method can follow a closure, a bound method's `__self__` or a
    loader to the full task (fine-tuning on test took digits from 0.63 to 0.98, unflagged). So every callable
    here closes over `task.without_test()`, the cell's configs and the cache (a folder), never over the full task
    or the runner (which caches full tasks). The teacher is loaded from the cache: the harness has trained it and
    measured its test accuracy before the method runs (`SuiteRunner.run_cell`), as the Ray executor always did.
    """
    seen = task.without_test()

    def finetune(model: nn.Module, module: Any = None, cfg: TrainConfig | None = None) -> nn.Module:
        budget = cfg or cell.finetune
        result = fit(model, seen, budget, seed=cell.seed, logger=logger, module=module)
        if fits is not None:   # every training run a method asks for is timed into the record
            fits.append(Fit(result.epoch_seconds, result.train_batches, budget.batch_size,
                            [h.get("val_acc", float("nan")) for h in result.history], result.selected_epoch,
                            round(result.seconds, 2)))
        return result.model

    def teacher() -> TrainedModel:
        trained = cache.load(seen, cell.task, cell.teacher, cell.teacher_train, cell.seed)
        if trained is None:
            raise SlimbenchError(
                f"no trained teacher {cell.teacher.name!r} for {cell.label}: the harness trains one before a method "
                f"that declares `uses_teacher = True` (its run_id then includes the teacher); "
                f"{cell.method.name!r} does not")
        return trained

    def fresh_model() -> nn.Module:
        return build_model(cell.model.name, seen.spec, seen.num_classes, cell.model.params)

    return MethodContext(task=MethodView(seen), finetune=finetune, teacher=teacher, seed=cell.seed,
                         budget=cell.finetune, train_budget=cell.train, baseline=baseline, fresh_model=fresh_model,
                         log=log or (lambda _metrics: None))


class SuiteRunner:
    def __init__(self, suite: Suite, results_root: Path, cache_root: Path | None = None, wandb_mode: str = "offline",
                 progress: bool = True, allow_dirty: bool | None = None):
        self.suite = suite
        self.allow_dirty = allow_dirty if allow_dirty is not None else os.environ.get("SLIMBENCH_ALLOW_DIRTY") == "1"
        self.paths = SuitePaths(Path(results_root) / suite.name)
        self.cache = ModelCache(cache_root or Path(results_root) / ".cache" / "models")
        self.tracker = Tracker(wandb_mode, self.paths.root, suite.wandb_project, suite.name)
        self.progress = progress
        self._tasks: dict[str, Task] = {}
        self.source: dict[str, Any] = {}

    # -- pieces shared by cells ------------------------------------------------------------------------
    def task(self, cfg: Named) -> Task:
        key = cfg.name + cfg.params_json
        if key not in self._tasks:
            self._tasks[key] = build_task(cfg.name, cfg.params)
        return self._tasks[key]

    def trained(self, task: Task, cell: Cell, model: Named, train: TrainConfig, role: str) -> TrainedModel:
        cached = self.cache.load(task, cell.task, model, train, cell.seed)
        if cached is not None:
            return cached
        with self.cache.lock(cell.task, model, train, cell.seed):   # another shard may be training it right now
            cached = self.cache.load(task, cell.task, model, train, cell.seed)
            if cached is not None:
                return cached
            return self._train(task, cell, model, train, role)

    def _train(self, task: Task, cell: Cell, model: Named, train: TrainConfig, role: str) -> TrainedModel:
        with self.tracker.run(f"{role}/{task.name}/{model.name}/s{cell.seed}", f"train-{role}",
                              {"task": cell.task.to_dict(), "model": model.to_dict(), "train": asdict(train),
                               "seed": cell.seed}, [task.name, model.name, role]) as run:
            trained = self.cache.train(task, cell.task, model, train, cell.seed,
                                       logger_factory=lambda _cfg: self.tracker.lightning_logger(run))
            run.summary.update({"test_accuracy": trained.meta["test_accuracy"], "val_acc": trained.meta["val_acc"]})
        return trained

    def log_leaderboard(self, rows: list[LeaderboardRow]) -> None:
        """The suite summary in a W&B run of its own: the three leaderboards as tables, the Pareto plots as images
        (the same files `slimbench report` wrote, so W&B and the folder never disagree)."""
        if self.tracker.mode == "disabled" or not rows:
            return
        import wandb

        from slimbench.harness.report.build import COLUMNS
        from slimbench.harness.report.leaderboards import (
            BY_METHOD_COLUMNS,
            MATRIX_COLUMNS,
            by_method_rows,
            failed_rows,
            matrix_rows,
        )

        def table(columns: list[str], data: list[Any]) -> Any:   # rows of harness.report.rows: each has columns()
            cells = [[row.columns().get(c) for c in columns] for row in data]
            # wandb annotates columns as list[str | int], which (a list being invariant) refuses a list[str]
            return wandb.Table(columns=columns, data=cells)  # type: ignore[arg-type]

        failed = failed_rows(load_records(self.paths.runs))
        with self.tracker.run("leaderboard", "report", {"suite": self.suite.name}, ["leaderboard"]) as run:
            run.log({"leaderboard": table(COLUMNS, rows),
                     "leaderboard_by_method": table(BY_METHOD_COLUMNS, by_method_rows(rows, failed)),
                     "matrix": table(MATRIX_COLUMNS, matrix_rows(rows)),
                     **{f"{kind}/{p.stem.removeprefix(kind + '_')}": wandb.Image(str(p))
                        for kind in ("pareto", "robustness", "explanations", "sweep")
                        for p in sorted(self.paths.root.glob(f"{kind}_*.png"))}})

    # -- the suite ----------------------------------------------------------------------------------------
    def check_source_tree(self) -> dict[str, Any]:
        """Records name the commit that produced them, so that commit must be the code that ran."""
        state = git_state()
        if state.get("dirty") and not self.allow_dirty:
            raise SlimbenchError(
                f"the slimbench source tree has uncommitted changes ({', '.join(state.get('changed', [])[:5])}); "
                f"a record must name the exact code that produced it. Commit them, or pass --allow-dirty to run "
                f"anyway (records are then marked dirty and reports flag them)")
        return state

    def run(self, only: str | None = None, shard: tuple[int, int] | None = None,
            executor: Executor | None = None) -> SuiteOutcome:
        """Run every selected cell that has no record yet, one after another here (default) or through `executor`
        (harness.executors: serial, or Ray tasks); either way each cell gets a record, failed ones with their error."""
        self.source = self.check_source_tree()   # the code this process runs: later edits do not change it
        cells = [c for c in self.suite.cells if (only is None or fnmatch.fnmatchcase(c.label, only))
                 and (shard is None or in_shard(c.run_id, *shard))]
        return (executor or SerialExecutor()).run(self, cells)

    def record_failure(self, cell: Cell, error: str) -> None:
        """A failed cell stays visible in every table with its error; it is not "done", so a rerun retries it."""
        self._record_unmeasured(cell, "failed", {"error": error})

    def _record_unmeasured(self, cell: Cell, status: str, why: dict[str, str]) -> RunRecord:
        record = RunRecord(
            run_id=cell.run_id, suite=cell.suite, status=status, task=cell.task.name, model=cell.model.name,
            method=cell.method.name, family=METHODS.get(cell.method.name).family, seed=cell.seed,
            config=cell.config(), metrics=None, reference=None, compression=None,
            details={**why, "params_given": params_given(cell)}, provenance=self.provenance(cell),
            hardware=self.hardware(),
        )
        write_record(self.paths.runs, record)
        return record

    def provenance(self, cell: Cell) -> Provenance:
        """What every record says about the code and packages that produced it, and when."""
        return Provenance(versions=versions(), plugins=cell.plugins(), git=GitState(**(self.source or git_state())),
                          created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @staticmethod
    def hardware() -> Hardware:
        """The machine, and how Lightning spread the cell's training (--devices/--strategy/--num-nodes): not in the
        run_id, so said here."""
        return Hardware.from_dict({**hardware(), "training_devices": asdict(current_devices())})

    def run_cell(self, cell: Cell) -> RunRecord:
        t_start = time.perf_counter()
        task = self.task(cell.task)
        t_task = time.perf_counter()
        method = build_method(cell.method.name, cell.method.params)
        # asked of an untrained model, before any training: the architecture alone decides; a method that keeps the
        # default answer (it applies everywhere) costs no model build
        reason = None
        if type(method).not_applicable is not Method.not_applicable:
            reason = method.not_applicable(build_model(cell.model.name, task.spec, task.num_classes, cell.model.params))
        if reason:
            return self._record_unmeasured(cell, NOT_APPLICABLE, {"not_applicable": reason})
        base = self.trained(task, cell, cell.model, cell.train, "baseline")
        if method.uses_teacher:   # trained and evaluated on test here, out of the method's reach; ctx.teacher loads it
            self.trained(task, cell, cell.teacher, cell.teacher_train, "teacher")
        t_base = time.perf_counter()   # "baseline" time: the trained models the cell starts from (teacher included)
        family = METHODS.get(cell.method.name).family
        config = cell.config()
        with self.tracker.run(cell.label, "cell", {"run_id": cell.run_id, **config},
                              [task.name, cell.model.name, cell.method.name, family]) as run:
            logger = self.tracker.lightning_logger(run)
            fits: list[Fit] = []
            ctx = method_context(task, cell, base, self.cache, logger=logger, log=lambda metrics: run.log(metrics),
                                 fits=fits)
            L.seed_everything(cell.seed, verbose=False)
            t_apply = time.perf_counter()
            result: Outcome = method.apply(copy.deepcopy(base.model), ctx)
            apply_seconds = time.perf_counter() - t_apply
            t_measure = time.perf_counter()
            measured = self.measure(result, base, task, cell, model_is_reference=family == "baseline")
            # the last stage is the chain's result, measured just above: its numbers are reused, not remeasured
            stages = [self.measure_stage(stage, base, task, cell,
                                         measured if stage.outcome.model is result.model else None)
                      for stage in result.stages]
            artifact = self.save_artifact(cell, measured.data,
                                          not isinstance(result.model, (OnnxModel, ExecutorchModel)))
            measure_seconds = time.perf_counter() - t_measure
            compression = Compression(baseline=family == "baseline", storage_formats=measured.packed.formats(),
                                      evidence=measured.evidence)
            record = RunRecord(
                run_id=cell.run_id, suite=cell.suite, status="ok", task=task.name, model=cell.model.name,
                method=cell.method.name, family=family, seed=cell.seed, config=config,
                metrics=measured.metrics, reference=measured.reference,
                compression=compression,
                details={**result.details, "task": task.describe(), "stages": stages,
                         "params_given": params_given(cell)},
                baseline_training=BaselineTraining(**{k: v for k, v in base.meta.items() if k != "history"}),
                fits=fits,
                artifact=artifact,
                wall_seconds={"task": round(t_task - t_start, 2), "baseline": round(t_base - t_task, 2),
                              "apply": round(apply_seconds, 2), "measure": round(measure_seconds, 2),
                              **{f"measure.{k}": v for k, v in measured.phases.items()},
                              "total": round(time.perf_counter() - t_start, 2)},
                wandb=WandbRun(**Tracker.describe(run)), provenance=self.provenance(cell), hardware=self.hardware(),
            )
            robust = measured.metrics.robustness
            run.summary.update({**{f"metrics/{k}": v for k, v in measured.metrics.to_dict().items()
                                   if k not in ("robustness", "explanations")},
                                **({f"robustness/{k}": v for k, v in (("corrupted_accuracy", robust.corrupted_accuracy),
                                    ("per_class_accuracy", robust.per_class_accuracy)) if v} if robust else {}),
                                "label": compression.label, "run_id": cell.run_id})
        write_record(self.paths.runs, record)
        return record

    def measure(self, result: Outcome, base: TrainedModel, task: Task, cell: Cell,
                model_is_reference: bool = False) -> Measured:
        """Accuracy of the deployed model itself; size, compute and latency beside the reference (`base`) deployed
        the same way (same runtime, same graph optimisations), all in this process."""
        cfg = cell.measure
        reference_model = base.model
        runtime = check_runtime(result.runtime)
        model = result.model.eval()
        x1, xn = task.example_input(1), task.example_input(cfg.latency_batch)
        lap = Laps()
        packed = result.packed or stored_form(model)
        check_packed(packed, model)   # a stored form that does not decode to the model fails before anything counts
        deployed = deploy(model, runtime, xn, threads=None)
        lap("deploy")
        evaluation = evaluate_test(deployed, task)
        accuracy, macro_f1 = evaluation.accuracy, evaluation.macro_f1
        lap("evaluate")
        robust = robustness(deployed, task, evaluation.predictions, cfg.corrupted_examples) if cfg.robustness else None
        lap("robustness")
        explained = None
        if cfg.explanations:   # the baseline's own cell keeps its attributions instead of comparing with itself
            explained = explain_deployed(model, deployed, task, None if model_is_reference else reference_model,
                                         ExplainConfig(examples=cfg.explanation_examples))
            lap("explanations")
        by_runtime = {}
        if cfg.runtime_accuracy:
            by_runtime = quality_by_runtime(model, cfg.runtimes, runtime, deployed, evaluation, task, xn)
            lap("runtimes")
        runtime_graph = isinstance(model, (OnnxModel, ExecutorchModel))   # rebuilt from its own file, no structure
        data, gz = serialized_sizes(packed, structure=None if runtime_graph else describe(model))
        ref_packed = pack_state_dict(reference_model.state_dict())
        ref_data, ref_gz = serialized_sizes(ref_packed, structure=describe(reference_model))
        like, like_form = None, "state dict"
        if isinstance(model, OnnxModel):
            like, like_form = reference_stored_like(reference_model, xn), "onnx fp32, BatchNorm folded"
        elif isinstance(model, ExecutorchModel):
            like, like_form = reference_program_like(reference_model, xn, model), "executorch fp32 .pte (XNNPACK)"
        lap("sizes")
        latency, latency_kernels = measure_latency(model, None if model_is_reference else reference_model, runtime,
                                                   {"b1": x1, "bn": xn}, cfg)
        lap("latency")
        counted = torch_form(model)
        params, nonzero = count_params(counted)
        ref_params, ref_nonzero = count_params(reference_model)
        macs, ref_macs = count_macs(counted, x1), count_macs(reference_model, x1)
        metrics = Metrics(
            accuracy=accuracy, macro_f1=macro_f1, params=params, nonzero_params=nonzero,
            stored_bytes=packed.nbytes, gzip_bytes=gz, file_bytes=len(data), macs=macs,
            latency_b1_ms=latency["model"][runtime]["b1_ms"], latency_bn_ms=latency["model"][runtime]["bn_ms"],
            latency_batch=cfg.latency_batch,
            peak_memory_bytes=peak_memory_bytes(model, xn) if cfg.peak_memory and runtime == "eager" else None,
            eval_seconds=round(lap.seconds["deploy"] + lap.seconds["evaluate"], 2), runtime=runtime,
            latency=latency["model"],
            mean_corrupted_accuracy=robust.mean_corrupted() if robust else None, robustness=robust,
            latency_kernels=latency_kernels.to_dict(), by_runtime=by_runtime, explanations=explained,
        )
        reference = Reference(
            accuracy=base.meta["test_accuracy"], macro_f1=base.meta["test_macro_f1"],
            params=ref_params, nonzero_params=ref_nonzero, gzip_bytes=ref_gz, file_bytes=len(ref_data),
            macs=ref_macs, latency_b1_ms=latency["reference"][runtime]["b1_ms"],
            latency_bn_ms=latency["reference"][runtime]["bn_ms"], runtime=runtime,
            # like for like: the fp32 reference in the model's stored form (an ONNX graph with the same graph
            # optimisations, BatchNorm folded, for a runtime graph); the raw state dict's size beside it
            stored_bytes=like.nbytes if like is not None else ref_packed.nbytes,
            stored_form=like_form,
            state_dict_stored_bytes=ref_packed.nbytes, latency=latency["reference"],
        )
        metrics.speedup = {rt: {example: SpeedupBand(**band) for example, band in by_example.items()}
                           for rt, by_example in speedup_bands(latency, runtime).items()}
        evidence = gather(packed, deployed, counted, macs, ref_macs, result.compute, result.requested, result.achieved)
        lap("counting")
        return Measured(metrics, reference, packed, data, evidence, lap.seconds)

    def measure_stage(self, stage: Stage, base: TrainedModel, task: Task, cell: Cell,
                      measured: Measured | None = None) -> dict[str, Any]:
        """One step of a chain, measured like a cell: what each stage bought."""
        m = measured or self.measure(stage.outcome, base, task, cell)
        return {"method": stage.method, "params": stage.params, "metrics": m.metrics.to_dict(),
                "storage": m.evidence.storage.label, "compute": m.evidence.compute.label,
                "compression_x": m.reference.stored_bytes / max(m.metrics.stored_bytes, 1),
                "verified": m.evidence.verified, "disagreements": m.evidence.disagreements}

    def save_artifact(self, cell: Cell, data: bytes, has_structure: bool) -> Artifact:
        """The deployed form of the model (stored tensors + layer structure, or the ONNX graph), loadable with
        `torch.load(weights_only=True)` and rebuilt by `load_artifact`; git-ignored."""
        path = self.paths.artifacts / cell.run_id / "model.pt"
        atomic_write_bytes(path, data)
        return Artifact(path=str(path.relative_to(self.paths.root)), sha256=hashlib.sha256(data).hexdigest(),
                        bytes=len(data), format="slimbench-packed-v1", structure=has_structure)

