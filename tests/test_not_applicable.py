"""A method that cannot apply to an architecture says so (`Method.not_applicable`) and its cell is recorded n/a with
that reason before any training: plan and dry-run show it, the matrix prints "n/a (why)", a rerun keeps it, and a
plugin method declares its own without harness edits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slimbench.baselines import build_model
from slimbench.core.errors import NotApplicableError
from slimbench.harness.report.build import build_report
from slimbench.harness.run.plan import make_plan, plan_text
from slimbench.harness.run.records import load_records
from slimbench.harness.run.runner import SuiteRunner
from slimbench.harness.run.suite import load_suite
from slimbench.methods import build_method
from slimbench.tasks import InputSpec

IMAGE = InputSpec(1, 28, 28)
TEXT = InputSpec(1, 48, 64, modality="text", token_vocab=100)

PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

from slimbench.methods import Method, MethodContext, Outcome, register_method


@register_method("natest.never")
@dataclass
class Never(Method):
    """Applies to no model: the harness must never train a baseline for it nor call apply."""

    family: ClassVar[str] = "pruning"

    def not_applicable(self, model):
        return f"{type(model).__name__} is not the architecture this plugin needs"

    def apply(self, model, ctx: MethodContext) -> Outcome:
        raise AssertionError("apply ran on a model the method declared n/a")
'''


def test_builtin_methods_declare_structural_misfits_and_refuse_by_the_same_rule():
    squeezenet = build_model("squeezenet", IMAGE, 10)
    mobilenet = build_model("mobilenetv2", IMAGE, 10)
    tying, dynamic = build_method("share.cross_layer"), build_method("quant.dynamic_int8")
    assert "no consecutive blocks of identical structure" in (tying.not_applicable(squeezenet) or "")
    assert "no layer it quantizes" in (dynamic.not_applicable(squeezenet) or "")
    assert tying.not_applicable(mobilenet) is None and dynamic.not_applicable(mobilenet) is None
    # the decision follows the architecture the task builds and the method's own parameters
    assert dynamic.not_applicable(build_model("squeezenet", TEXT, 2)) is None          # text embeds: a Gather
    assert build_method("quant.dynamic_int8", {"op_types": ["Conv"]}).not_applicable(squeezenet) is None
    assert "stages [99] do not exist" in (build_method("share.cross_layer", {"stages": [99]})
                                          .not_applicable(mobilenet) or "")
    assert build_method("prune.magnitude", {"sparsity": 0.5}).not_applicable(squeezenet) is None
    with pytest.raises(NotApplicableError, match="no consecutive blocks"):   # apply refuses before it needs ctx
        tying.apply(squeezenet, ctx=None)  # type: ignore[arg-type]


def _cli(*args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "disabled", "SLIMBENCH_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-m", "slimbench", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_plugin_methods_declared_n_a_cell_is_recorded_before_training_and_shown_everywhere(
        smoke_config: dict, tmp_path: Path):
    plugin = tmp_path / "never.py"
    plugin.write_text(PLUGIN)
    smoke_config["methods"] = ["natest.never"]
    smoke_config["imports"] = [str(plugin)]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    suite = load_suite(path)
    results = tmp_path / "results"
    runner = SuiteRunner(suite, results, wandb_mode="disabled", progress=False, allow_dirty=True)
    outcome = runner.run()
    reason = "Sequential is not the architecture this plugin needs"
    assert outcome.done == [suite.cells[0].run_id] and not outcome.failed
    (record,) = load_records(runner.paths.runs)
    assert (record.status, record.details["not_applicable"], record.metrics) == ("n/a", reason, None)
    assert not list((results / ".cache" / "models").glob("*.pt*"))   # no baseline was trained for it
    assert SuiteRunner(suite, results, wandb_mode="disabled", progress=False, allow_dirty=True).run().skipped

    plan = make_plan(suite, runner.paths.runs)
    assert plan.not_applicable == {record.run_id: reason} and not plan.pending and not plan.failed
    assert f"n/a      {record.run_id}  {suite.cells[0].label}: {reason}" in plan_text(suite, plan)
    assert f"{record.run_id}  n/a      {suite.cells[0].label}: {reason}" in _cli(
        "run", str(path), "--results", str(results), "--dry-run")

    build_report(runner.paths.root)
    matrix = (runner.paths.root / "matrix.md").read_text()
    assert f"n/a (tiny-cnn: {reason})" in matrix and "failed" not in matrix.split("|", 1)[1]
    board = (runner.paths.root / "leaderboard.md").read_text()
    assert "Not applicable" in board and "Failed cells" not in board
