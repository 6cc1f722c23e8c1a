"""Suite files: one YAML file = one experiment grid (torchdistill-style), expanded into hashed cells."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slimbench.baselines import MODELS
from slimbench.baselines.classifier import TrainConfig
from slimbench.core.errors import ConfigError
from slimbench.deploy.latency import MeasureConfig
from slimbench.core.params import build_dataclass
from slimbench.core.registry import Registry, parse_params
from slimbench.methods import METHODS
from slimbench.tasks import TASKS

SUITE_KEYS = {"suite", "description", "seeds", "tasks", "models", "methods", "train", "finetune", "teacher",
              "measure", "wandb_project", "exclude", "train_overrides"}
DEFAULT_TEACHER = {"name": "mobilenetv2", "params": {"width_mult": 1.4}}


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
        """Only what can change this cell's result, so editing e.g. the teacher reruns distillation cells alone."""
        method = METHODS.get(self.method.name)
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
        config["measure"] = dataclasses.asdict(self.measure)
        return config

    @property
    def run_id(self) -> str:
        return config_hash(self.config())

    @property
    def label(self) -> str:
        params = ",".join(f"{k}={self.method.params[k]}" for k in self.method.given)
        return f"{self.task.name}/{self.model.name}/{self.method.name}" + (f"[{params}]" if params else "") + f"/s{self.seed}"


@dataclass
class Suite:
    name: str
    description: str
    cells: list[Cell]
    path: Path | None
    wandb_project: str = "slimbench"


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
    out = []
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
    resolved = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed) if f.init}
    return Named(name, json.loads(json.dumps(resolved, default=list)), tuple(params))


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file completely before anything runs (bad input writes nothing)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"suite file {path} does not exist; suites in configs/: "
                          f"{', '.join(sorted(p.name for p in Path('configs').glob('*.yaml'))) or '(none)'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"suite file {path} is not valid YAML: {exc}") from None
    return parse_suite(raw, path)


def parse_suite(raw: Any, path: Path | None = None) -> Suite:
    where = f"suite file {path}" if path else "suite"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(SUITE_KEYS))}")
    name = str(raw.get("suite") or (path.stem if path else "suite"))
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: `seeds:` must be a non-empty list of integers, got {seeds!r}")
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
    pair_rules = _pair_overrides(raw.get("train_overrides"), tasks, models, where)
    for kind, entries in (("task", task_entries), ("model", model_entries)):   # each override alone names its entry
        for e_name, _, extra in entries:
            if extra["train"]:
                build_dataclass(TrainConfig, {**train_raw, **extra["train"]}, f"{where}: train of {kind} {e_name}")
    for rule in pair_rules:
        build_dataclass(TrainConfig, {**train_raw, **rule["train"]}, f"{where}: train_overrides rule {rule}")
    budgets = {}
    for ti, (t_name, _, t_extra) in enumerate(task_entries):
        for mi, (m_name, _, m_extra) in enumerate(model_entries):
            pair = [r["train"] for r in pair_rules if _matches(r, t_name, m_name)]
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
    exclude = raw.get("exclude") or []
    cells = [
        Cell(name, t, m, meth, seed, budgets[ti, mi], finetune, teacher, teacher_train, measure)
        for (ti, t), (mi, m), meth, seed in itertools.product(enumerate(tasks), enumerate(models), methods, seeds)
        if not _excluded(exclude, t, m, meth)
    ]
    return Suite(name, str(raw.get("description", "")), cells, path, str(raw.get("wandb_project", "slimbench")))


def _pair_overrides(raw: Any, tasks: list[Named], models: list[Named], where: str) -> list[dict[str, Any]]:
    """`train_overrides: [{task: fashion-mnist, model: mobilenetv2, train: {...}}]`: a budget for some pairs only.

    A rule that matches no task × model pair of the suite is an error: it is almost always a misspelt name.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: `train_overrides:` must be a list of {{task, model, train}} rules, got {raw!r}")
    for rule in raw:
        if (not isinstance(rule, dict) or not set(rule) <= {"task", "model", "train"} or "train" not in rule
                or not ({"task", "model"} & set(rule)) or not isinstance(rule["train"], dict)):
            raise ConfigError(f"{where}: each `train_overrides` rule needs `train:` (a mapping) and a `task` "
                              f"and/or `model` pattern, got {rule!r}")
        if not any(_matches(rule, t.name, m.name) for t in tasks for m in models):
            raise ConfigError(
                f"{where}: `train_overrides` rule {rule!r} matches no task × model of this suite; tasks: "
                f"{', '.join(t.name for t in tasks)}; models: {', '.join(m.name for m in models)}")
    return raw


def _matches(rule: dict[str, Any], task: str, model: str) -> bool:
    return _globs_match(rule, {"task": task, "model": model})


def _globs_match(rule: dict[str, Any], values: dict[str, str]) -> bool:
    """Every pattern the rule sets for one of `values`' keys matches (keys it does not set match anything)."""
    return all(fnmatch.fnmatchcase(values[k], str(v)) for k, v in rule.items() if k in values)


def _excluded(rules: list[dict[str, str]], task: Named, model: Named, method: Named) -> bool:
    """`exclude: [{model: squeezenet, method: 'quant.*'}]` drops matching combinations (glob patterns)."""
    values = {"task": task.name, "model": model.name, "method": method.name}
    for rule in rules:
        if not isinstance(rule, dict) or not set(rule) <= set(values):
            raise ConfigError(f"suite file: each `exclude` rule maps task/model/method to a pattern, got {rule!r}")
        if _globs_match(rule, values):
            return True
    return False
