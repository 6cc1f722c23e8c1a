"""configs/standard.yaml parses and covers the grid it promises: every registered method that applies to a CNN, every
embedded task, the three backbones (distillation from the suite's teacher), seeds 0-2, with the resources a Ray worker
is asked for."""

from __future__ import annotations

from slimbench.baselines import build_model
from slimbench.harness.run.suite import load_suite
from slimbench.methods import METHODS, build_method
from slimbench.tasks import InputSpec

EMBEDDED_TASKS = {"fashion-mnist", "rotten-tomatoes", "synth-kws"}
BACKBONES = {"mobilenetv2", "squeezenet", "efficientnet_b0"}


def test_standard_suite_is_every_method_on_every_task_and_backbone():
    suite = load_suite("standard")
    assert suite.name == "standard" and suite.resources.cpus == 1
    mobilenet = build_model("mobilenetv2", InputSpec(1, 28, 28), 10)
    # every built-in method that applies to a CNN backbone (the attention-only ones are the transformers suite's)
    builtin = {e.name for e in METHODS.entries("*") if e.source.get("kind") == "builtin"
               and METHODS.get(e.name).__module__.startswith("slimbench.methods.")   # not a test's own entry
               and build_method(e.name, METHODS.get(e.name).example[1]).not_applicable(mobilenet) is None}
    assert {"prune.heads", "tokens.merge"}.isdisjoint(builtin) and "prune.channel" in builtin
    grid: dict[str, set[tuple[str, str]]] = {}
    for cell in suite.cells:
        grid.setdefault(cell.method.name, set()).add((cell.task.name, cell.model.name))
    assert set(grid) == builtin
    for method, pairs in grid.items():
        assert pairs == {(t, m) for t in EMBEDDED_TASKS for m in BACKBONES}, method
    # the controls: the fine-tune alone wherever a fine-tuned method runs, and random pruning at magnitude's settings
    pruning = {(c.task.name, c.model.name, c.seed, c.method.name, c.method.params["sparsity"])
               for c in suite.cells if c.method.name in ("prune.magnitude", "prune.random")}
    for task, model, seed, name, sparsity in pruning:
        assert (task, model, seed, "prune.magnitude", 0.0) in pruning
        if sparsity > 0:
            assert (task, model, seed, "prune.random" if name == "prune.magnitude" else "prune.magnitude",
                    sparsity) in pruning
    assert {c.finetune.max_train_batches for c in suite.cells if c.method.name != "baseline"} == {94}
    assert {c.seed for c in suite.cells} == {0, 1, 2}
    assert all(len([c for c in suite.cells if (c.task, c.model, c.method) == (cell.task, cell.model, cell.method)]) == 3
               for cell in suite.cells[:30])
    assert {c.teacher.name for c in suite.cells} == {"mobilenetv2"}
