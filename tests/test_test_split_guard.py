"""The test split is out of every method's reach, not only by name.

`MethodView` refuses `ctx.task.test` by name, but a method can also follow what it is handed: a bound loader's
`__self__`, the view's own slot, the closures of `finetune` / `teacher` / `fresh_model`. These tests run a real cell
through `SuiteRunner` with a method that keeps the `MethodContext` it was given, then walk everything reachable from
that context (and from what its callables return) and assert that no tensor shares storage with the harness's test
split, while fine-tuning, the teacher, calibration and the measured robustness still work.
"""

from __future__ import annotations

import copy
import gc
import sys
import types
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from slimbench.core.errors import SlimbenchError
from slimbench.harness.run.records import load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import parse_suite
from slimbench.methods import METHODS, Method, MethodContext, Outcome, register_method
from slimbench.tasks import Task
from slimbench.tasks.base import TestSplitAccessError as SplitAccessError  # aliased: pytest collects Test* names
from tests.conftest import SMOKE

CAPTURED: list[MethodContext] = []


@dataclass
class _Capture(Method):
    """Keeps its context, and uses everything in it the honest way: teacher, fine-tune, calibration, examples."""

    family: ClassVar[str] = "distillation"
    uses_teacher: ClassVar[bool] = True

    def apply(self, model: nn.Module, ctx: MethodContext) -> Outcome:
        CAPTURED.append(ctx)
        teacher = ctx.teacher()
        before = copy.deepcopy(model.state_dict())
        tuned = ctx.finetune(model)
        x, y = next(iter(ctx.task.calibration_dataloader(32, batch_size=16)))
        changed = any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
        return Outcome(tuned, details={"teacher_test_accuracy": teacher.meta.get("test_accuracy"),
                                       "finetune_changed_weights": changed, "calibration_batch": list(x.shape),
                                       "calibration_labels": len(y), "example": list(ctx.task.example_input(4).shape),
                                       "fresh_model": type(ctx.fresh_model()).__name__})


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """One real cell of the smoke suite (digits, tiny-cnn) run by the runner's own code path; its context kept."""
    register_method("test.capture")(_Capture)
    CAPTURED.clear()
    try:
        config = copy.deepcopy(SMOKE)
        config["methods"] = ["test.capture"]
        runner = SuiteRunner(parse_suite(config), tmp_path_factory.mktemp("results"), wandb_mode="disabled",
                             progress=False)
        outcome = runner.run()
        assert not outcome.failed, outcome.failed
        (record,) = load_records(runner.paths.runs)
        (ctx,) = CAPTURED
        yield runner, runner.task(runner.suite.cells[0].task), ctx, record
    finally:
        METHODS.unregister("test.capture")
        CAPTURED.clear()


# -- walking the object graph ----------------------------------------------------------------------------------

def reachable(*roots: Any) -> dict[int, tuple[Any, int | None]]:
    """Every object reachable from `roots` by `gc.get_referents`, breadth-first: id -> (object, parent id).

    Closures' cells, bound methods' `__self__`, dicts, lists, dataclasses, nn.Modules, loaders and datasets
    are all followed. Not followed: module objects and module namespaces (a function's `__globals__` and
    `__builtins__`): they are code a method imports, not data it was handed.
    """
    code_namespaces = {id(vars(m)) for m in list(sys.modules.values()) if m is not None and hasattr(m, "__dict__")}
    seen: dict[int, tuple[Any, int | None]] = {}
    queue: deque[tuple[Any, int | None]] = deque((r, None) for r in roots)
    while queue:
        obj, parent = queue.popleft()
        if id(obj) in seen or isinstance(obj, types.ModuleType) or id(obj) in code_namespaces:
            continue
        seen[id(obj)] = (obj, parent)
        skip = {id(obj.__globals__), id(obj.__builtins__)} if isinstance(obj, types.FunctionType) else set()
        queue.extend((ref, id(obj)) for ref in gc.get_referents(obj) if id(ref) not in skip)
    return seen


def tensors(graph: dict[int, tuple[Any, int | None]]) -> list[torch.Tensor]:
    return [obj for obj, _ in graph.values() if isinstance(obj, torch.Tensor)]


def storage(t: torch.Tensor) -> int | None:
    """Where a tensor's bytes live (views and slices of one tensor share it); None for empty or storage-less ones."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):   # sparse / nested tensors: none in this graph
        return None
    return ptr or None


def path_to(graph: dict[int, tuple[Any, int | None]], obj: Any) -> str:
    """The chain of types from a root to `obj`: what a failure shows."""
    steps, key = [], id(obj)
    while key is not None:
        node, key = graph[key]
        steps.append(type(node).__name__)
    return " <- ".join(steps)


def test_split_storages(task: Task) -> set[int]:
    """The harness's test data: the test split and everything the corruption source (drawn from test) holds."""
    found = {storage(t) for t in tensors(reachable(task.test, task.corruptions))} - {None}
    assert {storage(task.test.x), storage(task.test.y)} <= found
    return found


test_split_storages.__test__ = False   # a helper, not a test


# -- the tests -----------------------------------------------------------------------------------------------

def test_nothing_reachable_from_the_method_context_holds_the_test_split(captured):
    runner, full, ctx, _ = captured
    forbidden = test_split_storages(full)
    returned = [ctx.teacher(), ctx.fresh_model(), ctx.task.train_dataloader(), ctx.task.val_dataloader(),
                ctx.task.calibration_dataloader(16), ctx.task.example_input(2)]
    graph = reachable(ctx, *returned)
    found = tensors(graph)
    assert storage(full.train.x) in {storage(t) for t in found}   # the walk does reach the data a method is given
    leaks = [path_to(graph, t) for t in found if storage(t) in forbidden]
    assert not leaks, f"test-split tensors reachable from the MethodContext: {leaks[:3]}"
    assert not [obj for obj, _ in graph.values() if obj is runner or obj is full], "the runner or the full task"


def test_the_two_known_escapes_find_no_test_data(captured):
    _, full, ctx, _ = captured
    behind_view = object.__getattribute__(ctx.task, "_task")
    behind_loader = ctx.task.train_dataloader.__self__
    for task in (behind_view, behind_loader):
        assert task is not full and task.test is None and task.corruptions is None and task.info == {}
        with pytest.raises(SplitAccessError, match="holds no test split"):
            task.test_dataloader()
    assert full.test is not None and full.corruptions is not None   # the harness keeps its own, untouched


def test_named_access_is_still_refused_with_the_view_message(captured):
    _, _, ctx, _ = captured
    for name in ("test", "test_dataloader", "corrupted_test", "info", "describe"):
        with pytest.raises(SplitAccessError, match="may not read the task's"):
            getattr(ctx.task, name)


def test_a_method_still_fine_tunes_calibrates_and_gets_a_measured_teacher(captured):
    _, _, _, record = captured
    assert record.status == "ok"
    d = record.details
    assert d["finetune_changed_weights"] and d["calibration_batch"] == [16, 1, 8, 8] and d["calibration_labels"] == 16
    assert d["example"] == [4, 1, 8, 8] and d["fresh_model"]
    # the harness evaluated the teacher on test, the method only reads it
    assert 0.0 < d["teacher_test_accuracy"] <= 1.0
    assert 0.0 < record.metrics.accuracy <= 1.0 and record.metrics.mean_corrupted_accuracy is not None


def test_without_test_shares_training_data_and_refuses_test_uses(captured):
    _, full, _, _ = captured
    stripped = full.without_test()
    assert stripped.train is full.train and stripped.val is full.val and stripped.without_test() is stripped
    assert stripped.num_classes == full.num_classes and stripped.spec == full.spec
    for use in (stripped.test_dataloader, stripped.describe, lambda: stripped.corrupted_test("gaussian_noise", 1, 8)):
        with pytest.raises(SplitAccessError):
            use()


def test_a_method_that_does_not_declare_a_teacher_gets_a_clear_error(captured, tmp_path):
    from slimbench.harness.run.cache import ModelCache
    from slimbench.harness.run.runner import method_context

    runner, full, ctx, _ = captured
    ctx = method_context(full, runner.suite.cells[0], ctx.baseline, ModelCache(tmp_path))   # an empty cache
    with pytest.raises(SlimbenchError, match="uses_teacher"):
        ctx.teacher()
