"""Pattern rules over a suite's grid: `exclude:`, `extra_seeds:` and `train_overrides:` name cells by glob patterns on
task / model / method names, optionally narrowed by method params; each rule's shape is checked when the suite is read.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, Protocol, TypeGuard

from slimbench.core.errors import ConfigError


class Entry(Protocol):
    """A resolved task, model or method entry (`suite.Named`): its name and every parameter."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> dict[str, Any]: ...


def pair_overrides(raw: Any, tasks: Sequence[Entry], models: Sequence[Entry], where: str) -> list[dict[str, Any]]:
    """`train_overrides: [{task: fashion-mnist, model: mobilenetv2, train: {...}}]`: a budget for some pairs only.

    A rule that matches no task × model pair of the suite is an error (almost always a misspelt name) unless its
    patterns name registered tasks and models: a base file then holds the budget of a model only some of the suites
    that extend it list.
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
        if not any(matches_pair(rule, t.name, m.name) for t in tasks for m in models) and not _names_registered(rule):
            raise ConfigError(
                f"{where}: `train_overrides` rule {rule!r} matches no task × model of this suite; tasks: "
                f"{', '.join(t.name for t in tasks)}; models: {', '.join(m.name for m in models)}")
    return raw


def _names_registered(rule: dict[str, Any]) -> bool:
    from slimbench.baselines import MODELS
    from slimbench.tasks import TASKS

    return all(any(fnmatch.fnmatchcase(name, str(rule[key])) for name in registry.names())
               for key, registry in (("task", TASKS), ("model", MODELS)) if key in rule)


def matches_pair(rule: dict[str, Any], task: str, model: str) -> bool:
    return _globs_match(rule, {"task": task, "model": model})


def _globs_match(rule: dict[str, Any], values: dict[str, str]) -> bool:
    """Every pattern the rule sets for one of `values`' keys matches (keys it does not set match anything)."""
    return all(fnmatch.fnmatchcase(values[k], str(v)) for k, v in rule.items() if k in values)


def rule_matches(rule: dict[str, Any], task: Entry, model: Entry, method: Entry) -> bool:
    """Glob patterns on task/model/method names; `params: {macs_ratio: 1.5}` narrows a rule to the method entries
    whose resolved params have those values."""
    values = {"task": task.name, "model": model.name, "method": method.name}
    params = rule.get("params", {})
    return _globs_match(rule, values) and all(_param_matches(method.params.get(k), v) for k, v in params.items())


def _param_matches(resolved: Any, wanted: Any) -> bool:
    """Equal values; a chain's `stages` match when names agree stage by stage and each stage's given params are
    among its resolved ones (a rule names a chain as the suite file wrote it, not with every default)."""
    if isinstance(wanted, list) and isinstance(resolved, list) and len(wanted) == len(resolved) and all(
            isinstance(w, dict) and isinstance(r, dict) and "name" in w for w, r in zip(wanted, resolved)):
        return all(w["name"] == r.get("name") and all(_param_matches((r.get("params") or {}).get(k), v)
                                                      for k, v in (w.get("params") or {}).items())
                   for w, r in zip(wanted, resolved))
    return resolved == wanted


def rule_shape(rule: Any, extra: frozenset[str] = frozenset()) -> bool:
    """A task/model/method pattern rule, optionally narrowed by `params`, with `extra` keys of its own."""
    return (isinstance(rule, dict) and set(rule) <= {"task", "model", "method", "params", *extra}
            and isinstance(rule.get("params", {}), dict))


def int_list(values: Any) -> TypeGuard[list[int]]:
    """A non-empty list of integers (booleans are not seeds)."""
    return (isinstance(values, list) and bool(values)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in values))


def excluded(rules: list[dict[str, Any]], task: Entry, model: Entry, method: Entry) -> bool:
    """`exclude: [{model: squeezenet, method: 'quant.*'}]` drops matching combinations (rules checked at parse)."""
    return any(rule_matches(rule, task, model, method) for rule in rules)


def extra_seed_rules(raw: Any, where: str) -> list[dict[str, Any]]:
    """`extra_seeds: [{model: mobilenetv2, method: baseline, seeds: [1, 2]}]`: more seeds only where a verdict
    depends on the spread (baselines, methods near a cliff), so the rest of the grid stays one seed cheap."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: `extra_seeds:` must be a list of {{task, model, method, params, seeds}} rules, "
                          f"got {raw!r}")
    for rule in raw:
        seeds = rule.get("seeds") if isinstance(rule, dict) else None
        if not rule_shape(rule, frozenset({"seeds"})) or not int_list(seeds) or any(s < 0 for s in seeds):
            raise ConfigError(f"{where}: each `extra_seeds` rule needs `seeds:` (a list of non-negative integers) "
                              f"and task/model/method patterns (optionally `params`), got {rule!r}")
    return raw


def cell_seeds(seeds: list[int], extra: list[dict[str, Any]], task: Entry, model: Entry, method: Entry) -> list[int]:
    """The suite's seeds plus those of every matching `extra_seeds` rule, each once, in order."""
    out = list(seeds)
    for rule in extra:
        if rule_matches(rule, task, model, method):
            out += [s for s in rule["seeds"] if s not in out]
    return out
