"""Suite files: one YAML file = one experiment grid (torchdistill-style), expanded into hashed cells."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimbench.baselines import MODELS
from slimbench.baselines.classifier import TrainConfig
from slimbench.baselines.training import TRAINING_VERSION
from slimbench.core import plugins
from slimbench.core.errors import ConfigError
from slimbench.core.params import bounded, build_dataclass, resolved_params
from slimbench.core.registry import Registry, parse_params
from slimbench.deploy.latency import MeasureConfig
from slimbench.harness.measure.explanation_data import EXPLANATIONS_VERSION
from slimbench.harness.measure.quality import MEASURE_VERSION
from slimbench.harness.run.suite_files import (
    is_base,
    packaged_suites,
    read_suite_file,
    resolve_suite_path,
)
from slimbench.harness.run.suite_rules import (
    cell_seeds,
    excluded,
    extra_seed_rules,
    int_list,
    matches_pair,
    pair_overrides,
    rule_matches,
    rule_shape,
)
from slimbench.methods import METHODS, build_method
from slimbench.tasks import TASKS

SUITE_KEYS = {"suite", "description", "extends", "seeds", "tasks", "models", "methods", "train", "finetune", "teacher",
              "measure", "wandb_project", "exclude", "train_overrides", "imports", "extra_seeds", "resources"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")   # a suite name is a folder under the results root
DEFAULT_TEACHER: dict[str, Any] = {"name": "mobilenetv2", "params": {"width_mult": 1.4}}


@dataclass(frozen=True)
class Resources:
    """What one cell asks of a worker (`resources: {cpus: 1, gpus: 0, memory_gb: 2}`): the Ray executor schedules
    by it; it decides where a cell runs, never its result, so it is not part of any run_id."""

    cpus: float = bounded(1.0, gt=0)
    gpus: float = bounded(0.0, ge=0)
    memory_gb: float | None = bounded(None, gt=0)


@dataclass(frozen=True)
class Named:
    """A registry name plus its resolved parameters (every default filled in, so hashes are stable)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    given: tuple[str, ...] = field(default=(), compare=False)   # the keys the suite file set (for labels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)


@dataclass(frozen=True)
class Cell:
    """One task × model × method × seed; its run_id is a hash of everything that determines its result."""

    suite: str
    task: Named
    model: Named
    method: Named
    seed: int
    train: TrainConfig
    finetune: TrainConfig
    teacher: Named
    teacher_train: TrainConfig
    measure: MeasureConfig

    def config(self) -> dict[str, Any]:
        """Only what can change this cell's result, so editing e.g. the teacher reruns distillation cells alone.

        The versions of the task, model, method, training and measurement code are part of it: a behaviour
        change bumps a version, and exactly the cells it affects get new run_ids (results expire with the code).
        """
        method = build_method(self.method.name, self.method.params)   # the instance: a chain's needs are its stages'
        versions = {"task": entry_version(TASKS, self.task.name), "model": entry_version(MODELS, self.model.name),
                    "method": entry_version(METHODS, self.method.name), "training": TRAINING_VERSION,
                    "measure": MEASURE_VERSION}
        config: dict[str, Any] = {
            "task": self.task.to_dict(),
            "model": self.model.to_dict(),
            "method": self.method.to_dict(),
            "seed": self.seed,
            "train": dataclasses.asdict(self.train),
        }
        if method.uses_finetune:
            config["finetune"] = dataclasses.asdict(self.finetune)
        if method.uses_teacher:
            config["teacher"] = {**self.teacher.to_dict(), "train": dataclasses.asdict(self.teacher_train)}
            versions["teacher"] = entry_version(MODELS, self.teacher.name)
        config["measure"] = resolved_params(self.measure)   # a measure setting `added` later hashes only when set
        if self.measure.explanations:
            versions["explanations"] = EXPLANATIONS_VERSION
        stage_versions = getattr(method, "stage_versions", None)
        if stage_versions:   # a chain expires when any of its stages changes
            versions["stages"] = stage_versions
        config["versions"] = versions
        used = self.plugins(method_uses_teacher=method.uses_teacher)
        if used:
            config["plugins"] = used
        return config

    def plugins(self, method_uses_teacher: bool = True) -> list[dict[str, Any]]:
        """The outside plugins whose code this cell runs (with version or sha256), so a changed plugin reruns it."""
        entries = [(TASKS, self.task.name), (MODELS, self.model.name), (METHODS, self.method.name)]
        if method_uses_teacher:
            entries.append((MODELS, self.teacher.name))
        out = []
        for registry, name in entries:
            if name in registry:
                source = registry.entry(name).source
                if source.get("kind") != "builtin" and source not in out:
                    out.append(source)
        return out

    @property
    def run_id(self) -> str:
        return config_hash(self.config())

    @property
    def label(self) -> str:
        params = ",".join(f"{k}={self.method.params[k]}" for k in self.method.given)
        return (f"{self.task.name}/{self.model.name}/{self.method.name}" + (f"[{params}]" if params else "")
                + f"/s{self.seed}")


@dataclass
class Suite:
    name: str
    description: str
    cells: list[Cell]
    path: Path | None
    wandb_project: str = "slimbench"
    resources: Resources = field(default_factory=Resources)


def entry_version(registry: Registry[Any], name: str) -> int | str:
    if name in registry:
        return registry.entry(name).version
    if registry is MODELS and name.startswith("timm/"):   # any timm architecture: timm's own version decides
        import timm

        return f"timm-{timm.__version__}"
    return registry.entry(name).version   # raises the clear unknown-name error


def config_hash(config: dict[str, Any], length: int = 12) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _named_list(raw: Any, key: str, extra: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Entries as (name, params, extras): `extra` names further mapping keys an entry may set (e.g. `train`)."""
    if raw is None:
        raise ConfigError(f"suite file: `{key}:` is required (a list of names or {{name, params}} mappings)")
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(f"suite file: `{key}:` must be a list, got {type(raw).__name__}")
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    allowed = {"name", "params", *extra}
    for item in raw:
        if isinstance(item, str):
            out.append((item, {}, {k: {} for k in extra}))
        elif isinstance(item, dict) and "name" in item and set(item) <= allowed:
            parts = {k: item.get(k) or {} for k in ("params", *extra)}
            for part, value in parts.items():
                if not isinstance(value, dict):
                    raise ConfigError(f"suite file: `{key}` entry {item['name']!r}: {part} must be a mapping")
            out.append((str(item["name"]), parts.pop("params"), parts))
        else:
            optional = " and optional " + ", ".join(f"`{k}`" for k in sorted(allowed - {"name"}))
            raise ConfigError(f"suite file: each `{key}` entry must be a name or a mapping with `name`{optional}; "
                              f"got {item!r}")
    return out


def _resolve(registry: Registry[Any], name: str, params: dict[str, Any]) -> Named:
    if registry is MODELS and name.startswith("timm/") and name not in MODELS:
        from slimbench.baselines.timm_models import check_timm_arch

        check_timm_arch(name.removeprefix("timm/"))
        return Named(name, dict(params), tuple(params))  # any timm architecture: params go to timm.create_model
    parsed = parse_params(registry, name, params)
    if parsed is None:
        return Named(name, {})
    resolved = resolved_params(parsed)   # a given `added` knob at its default is no knob: not in labels either
    return Named(name, json.loads(json.dumps(resolved, default=list)), tuple(k for k in params if k in resolved))


def load_suite(path: str | Path, imports: list[str] | tuple[str, ...] = ()) -> Suite:
    """Parse and validate a suite file completely before anything runs (bad input writes nothing); its `extends:`
    bases are merged first (harness/run/suite_files.py has the rules)."""
    source = resolve_suite_path(path)
    raw = read_suite_file(source)
    if is_base(raw):
        raise ConfigError(f"suite file {path} has no `methods:`: it is a base that suites name in `extends:`, not a "
                          f"suite to run; shipped suites: {', '.join(sorted(packaged_suites()))}")
    base = Path(source).parent if isinstance(source, Path) else None
    return parse_suite(raw, Path(str(source)), imports=imports, base=base)


def load_imports(specs: Any, where: str, base: Path | None = None) -> list[dict[str, Any]]:
    """Entry-point plugins, then each named module or file; returns their sources."""
    plugins.load_entry_points()
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, (list, tuple)) or not all(isinstance(s, str) and s for s in specs):
        raise ConfigError(f"{where}: `imports:` must be a list of module names or .py file paths, got {specs!r}")
    return [plugins.import_plugin(s, base).to_dict() for s in specs]


def parse_suite(raw: Any, path: Path | None = None, imports: list[str] | tuple[str, ...] = (),
                base: Path | None = None) -> Suite:
    where = f"suite file {path}" if path else "suite"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(SUITE_KEYS))}")
    if "extends" in raw:
        raise ConfigError(f"{where}: `extends:` is merged when a suite file is read (load_suite); parse_suite takes "
                          f"the merged mapping")
    load_imports(list(imports), "--import", Path.cwd())
    load_imports(raw.get("imports"), where, base)
    name = raw.get("suite") or (path.stem if path else "suite")
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(f"{where}: suite name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (it names "
                          f"the folder results/<suite>), starting with a letter or digit")
    seeds = raw.get("seeds", [0])
    if not int_list(seeds):
        raise ConfigError(f"{where}: `seeds:` must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"{where}: `seeds:` must be distinct non-negative integers, got {seeds!r}")
    task_entries = _named_list(raw.get("tasks"), "tasks", extra=("train",))
    model_entries = _named_list(raw.get("models"), "models", extra=("train",))
    tasks = [_resolve(TASKS, n, p) for n, p, _ in task_entries]
    models = [_resolve(MODELS, n, p) for n, p, _ in model_entries]
    methods = [_resolve(METHODS, n, p) for n, p, _ in _named_list(raw.get("methods"), "methods")]
    train_raw = raw.get("train") or {}
    if not isinstance(train_raw, dict):
        raise ConfigError(f"{where}: `train:` must be a mapping of training settings, got {train_raw!r}")
    train = build_dataclass(TrainConfig, train_raw, f"{where}: train")
    # a task's or model's own `train:` overrides the suite's budget for its baselines (task first, then model),
    # then each matching `train_overrides` rule, in file order
    pair_rules = pair_overrides(raw.get("train_overrides"), tasks, models, where)
    for kind, entries in (("task", task_entries), ("model", model_entries)):   # each override alone names its entry
        for e_name, _, e_extra in entries:
            if e_extra["train"]:
                build_dataclass(TrainConfig, {**train_raw, **e_extra["train"]}, f"{where}: train of {kind} {e_name}")
    for rule in pair_rules:
        build_dataclass(TrainConfig, {**train_raw, **rule["train"]}, f"{where}: train_overrides rule {rule}")
    budgets = {}
    for ti, (t_name, _, t_extra) in enumerate(task_entries):
        for mi, (m_name, _, m_extra) in enumerate(model_entries):
            pair = [r["train"] for r in pair_rules if matches_pair(r, t_name, m_name)]
            overrides = [t_extra["train"], m_extra["train"], *pair]
            budgets[ti, mi] = build_dataclass(
                TrainConfig, {k: v for part in [train_raw, *overrides] for k, v in part.items()},
                f"{where}: train for {t_name} × {m_name}") if any(overrides) else train
    finetune = build_dataclass(TrainConfig, raw.get("finetune") or {"epochs": 1, "lr": 1e-3}, f"{where}: finetune")
    teacher_raw = raw.get("teacher") or DEFAULT_TEACHER
    if not isinstance(teacher_raw, dict):
        raise ConfigError(f"{where}: `teacher:` must be a mapping with name, params and train, got {teacher_raw!r}")
    teacher_raw = dict(teacher_raw)
    teacher_train = build_dataclass(TrainConfig, teacher_raw.pop("train", None) or train_raw,
                                    f"{where}: teacher.train")
    teacher = [_resolve(MODELS, n, p) for n, p, _ in _named_list(teacher_raw, "teacher")][0]
    measure = build_dataclass(MeasureConfig, raw.get("measure"), f"{where}: measure")
    if not isinstance(raw.get("resources") or {}, dict):
        raise ConfigError(f"{where}: `resources:` must be a mapping of what each cell asks of a worker "
                          f"(e.g. {{cpus: 1, gpus: 0, memory_gb: 2}}), got {raw['resources']!r}")
    resources = build_dataclass(Resources, raw.get("resources"), f"{where}: resources")
    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list):
        raise ConfigError(f"{where}: `exclude:` must be a list of {{task, model, method}} pattern rules, "
                          f"got {exclude!r}")
    for rule in exclude:
        if not rule_shape(rule):
            raise ConfigError(f"suite file: each `exclude` rule maps task/model/method to a pattern (and optionally "
                              f"`params` to method parameter values), got {rule!r}")
    for kind, named in (("tasks", tasks), ("models", models), ("methods", methods)):
        _no_duplicates(named, kind, where)
    extra = extra_seed_rules(raw.get("extra_seeds"), where)
    cells = [
        Cell(name, t, m, meth, seed, budgets[ti, mi], finetune, teacher, teacher_train, measure)
        for (ti, t), (mi, m), meth in itertools.product(enumerate(tasks), enumerate(models), methods)
        if not excluded(exclude, t, m, meth)
        for seed in cell_seeds(seeds, extra, t, m, meth)
    ]
    for rule in extra:
        if not any(rule_matches(rule, c.task, c.model, c.method) for c in cells):
            raise ConfigError(f"{where}: `extra_seeds` rule {rule!r} matches no cell of this suite (after `exclude:`); "
                              f"tasks: {', '.join(t.name for t in tasks)}; models: "
                              f"{', '.join(m.name for m in models)}; methods: {', '.join(m.name for m in methods)}")
    if not cells:
        raise ConfigError(f"{where}: `exclude:` removes every cell of the grid ({len(tasks)} tasks × {len(models)} "
                          f"models × {len(methods)} methods × {len(seeds)} seeds); nothing would run")
    seen: dict[str, Cell] = {}
    for cell in cells:
        other = seen.setdefault(cell.run_id, cell)
        if other is not cell:
            raise ConfigError(f"{where}: cells {other.label} and {cell.label} are the same experiment (identical "
                              f"resolved config); remove one of the two entries")
    return Suite(name, str(raw.get("description", "")), cells, path, str(raw.get("wandb_project", "slimbench")),
                 resources)


def _no_duplicates(entries: list[Named], kind: str, where: str) -> None:
    """The same name with the same resolved params twice would silently collapse into one cell."""
    seen: dict[tuple[str, str], Named] = {}
    for entry in entries:
        key = (entry.name, entry.params_json)
        if key in seen:
            given = ", ".join(f"{k}={entry.params[k]}" for k in entry.given) or "defaults"
            raise ConfigError(f"{where}: `{kind}:` lists {entry.name} ({given}) twice with the same resolved "
                              f"parameters; remove the duplicate entry")
        seen[key] = entry
