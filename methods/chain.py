"""Chains: registered methods applied one after another (e.g. Deep Compression = prune → cluster → Huffman storage).

A chain is a method like any other, so the harness plans, caches and records it the same way. Every stage is
built when the suite is parsed, so a bad stage name, bad stage parameters or an impossible order (a stage that
cannot take what the previous one leaves, e.g. magnitude pruning after an int8 ONNX export) fail before any
training. Huffman coding needs no stage: the packed stored form picks it whenever it is the smallest.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from slimbench.core.errors import ConfigError, SlimbenchError
from slimbench.core.params import resolved_params
from slimbench.methods.base import Method, MethodContext, Outcome, Stage, build_method, register_method

STAGE_KEYS = {"name", "params"}


@register_method("chain")
@dataclass
class Chain(Method):
    """Registered methods applied in order, each on the previous one's model; every stage's result is kept.

    `stages` is a list of `{name: <method>, params: {...}}`. What the harness reads from a method (fine-tune
    budget used, teacher used, the form it produces) is taken from the stages.
    """

    family: ClassVar[str] = "chain"
    example: ClassVar[tuple[str, dict[str, Any]]] = (
        "tiny-cnn", {"stages": [{"name": "prune.magnitude", "params": {"sparsity": 0.5}},
                                {"name": "share.kmeans", "params": {"clusters": 16}}]})
    stages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.stages) < 2:
            raise ConfigError(f"chain: stages must list at least two methods ({{name, params}} each), "
                              f"got {len(self.stages)}")
        built: list[tuple[str, Method]] = []
        for i, stage in enumerate(self.stages, 1):
            if (not isinstance(stage, dict) or not isinstance(stage.get("name"), str) or set(stage) - STAGE_KEYS
                    or not isinstance(stage.get("params") or {}, dict)):
                raise ConfigError(f"chain: stage {i} must be a mapping with 'name' and optional 'params' (a "
                                  f"mapping), got {stage!r}")
            name = stage["name"]
            try:
                method = build_method(name, stage.get("params") or {})
            except SlimbenchError as exc:
                raise ConfigError(f"chain: stage {i} ({name}): {exc}") from None
            if built:
                prev_name, prev = built[-1]
                if prev.produces not in method.consumes:
                    raise ConfigError(
                        f"chain: stage {i} ({name}) cannot follow stage {i - 1} ({prev_name}): {prev_name} produces "
                        f"a {prev.produces!r} model, {name} takes {sorted(method.consumes)}")
            built.append((name, method))
        self._built = built
        # stages as they will run, defaults included: the record (and the run_id) say exactly what ran
        self.stages = [{"name": name, "params": resolved_params(m)} for name, m in built]
        # The harness reads these from the instance: a chain needs what its stages need.
        self.uses_finetune = any(m.uses_finetune for _, m in built)
        self.uses_teacher = any(m.uses_teacher for _, m in built)
        self.consumes = built[0][1].consumes
        self.produces = built[-1][1].produces
        self.stage_versions = {f"{i}:{name}": getattr(m, "version", 1) for i, (name, m) in enumerate(built, 1)}

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        stages: list[Stage] = []
        outcome: Outcome | None = None
        for name, method in self._built:
            # each stage gets its own copy, so the model an earlier stage left (and is measured) stays as it was
            outcome = method.apply(copy.deepcopy(model) if stages else model, ctx)
            stages.append(Stage(name, resolved_params(method), outcome))
            model = outcome.model
        assert outcome is not None
        return dataclasses.replace(
            outcome, stages=stages,
            details={**outcome.details, "chain": [s.method for s in stages]},
        )
