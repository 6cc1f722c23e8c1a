"""Methods and tasks from outside the repository: an installed package with an entry point, a module named
with --import, a .py file named in a suite's `imports:`; each runs with no edit of slimbench and is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow   # each test installs or imports a plugin in a fresh process

PLUGIN_CODE = '''
"""A plugin outside slimbench: one task and one method."""
from dataclasses import dataclass
from typing import ClassVar

import torch
from sklearn.datasets import make_classification

from slimbench.core.params import bounded
from slimbench.methods import Method, MethodContext, Outcome, register_method
from slimbench.tasks import InputSpec, Split, Task, TaskParams, register_task


@dataclass
class BlobParams(TaskParams):
    val_size: int = 100


@register_task("{prefix}-blobs")
def blobs(params: BlobParams) -> Task:
    """Separable 4×4 blobs, generated on the machine."""
    x, y = make_classification(900, 16, n_informative=8, n_classes=3, random_state=0)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 4, 4)
    y = torch.tensor(y)
    return Task("{prefix}-blobs", InputSpec(1, 4, 4), ["a", "b", "c"], Split(x[:600], y[:600]),
                Split(x[600:700], y[600:700]), Split(x[700:], y[700:]))


@register_method("{prefix}.halve")
@dataclass
class Halve(Method):
    """Halves the classifier's weights (a plugin method)."""

    family: ClassVar[str] = "quantization"
    uses_finetune: ClassVar[bool] = False
    factor: float = bounded(0.5, gt=0)

    def apply(self, model, ctx: MethodContext) -> Outcome:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(self.factor)
        return Outcome(model)
'''


def _suite(prefix: str, extra: dict | None = None) -> dict:
    return {
        "suite": f"{prefix}-suite", "seeds": [0],
        "tasks": [f"{prefix}-blobs"], "models": [{"name": "tiny-cnn", "params": {"width": 8}}],
        "methods": ["baseline", {"name": f"{prefix}.halve", "params": {"factor": 0.5}}],
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.01}, "finetune": {"epochs": 1},
        "measure": {"latency_batch": 4, "min_run_time": 0.005, "rounds": 1, "warmup": 1, "peak_memory": False},
        **(extra or {}),
    }


def _slimbench(args: list[str], cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "SLIMBENCH_PROGRESS": "0"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "slimbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _check_results(root: Path, prefix: str, source_kind: str) -> None:
    board = (root / "leaderboard.md").read_text()
    assert f"{prefix}-blobs" in board and f"{prefix}.halve" in board
    records = [json.loads(p.read_text()) for p in (root / "runs").glob("*.json")]
    assert {r["method"] for r in records} == {"baseline", f"{prefix}.halve"}
    halve = next(r for r in records if r["method"] == f"{prefix}.halve")
    assert halve["status"] == "ok"
    plugins = halve["provenance"]["plugins"]
    kinds = {p["kind"] for p in plugins}
    assert kinds == {source_kind}, plugins
    assert all(p.get("version") or p.get("sha256") for p in plugins)
    assert halve["config"]["plugins"] == plugins   # a changed plugin is a new run_id


def test_entry_point_plugin_package_runs_without_editing_slimbench(tmp_path: Path):
    pkg = tmp_path / "src"
    (pkg / "blobplug").mkdir(parents=True)
    (pkg / "blobplug" / "__init__.py").write_text(PLUGIN_CODE.replace("{prefix}", "ep"))
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "blobplug"
        version = "0.3.1"
        [project.entry-points."slimbench.plugins"]
        blobs = "blobplug"
        [tool.setuptools]
        packages = ["blobplug"]
    """))
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    work.mkdir()
    (work / "suite.yaml").write_text(yaml.safe_dump(_suite("ep")))
    listed = _slimbench(["list", "methods", "ep.*"], work, site)
    assert listed.returncode == 0 and "ep.halve" in listed.stdout and "blobplug" in listed.stdout, listed.stderr
    done = _slimbench(["run", "suite.yaml", "--results", "res", "--wandb", "disabled"], work, site)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_results(work / "res" / "ep-suite", "ep", "entry-point")
    records = [json.loads(p.read_text()) for p in (work / "res" / "ep-suite" / "runs").glob("*.json")]
    assert {p.get("version") for r in records for p in r["provenance"]["plugins"]} == {"0.3.1"}


def test_import_option_and_suite_imports_run_a_plugin_file(tmp_path: Path):
    plugin = tmp_path / "plugins" / "my_methods.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN_CODE.replace("{prefix}", "file"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "suite.yaml").write_text(yaml.safe_dump(_suite("file")))
    done = _slimbench(["run", "suite.yaml", "--results", "res", "--wandb", "disabled", "--import", str(plugin)], work)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_results(work / "res" / "file-suite", "file", "file")
    # the same file named in the suite itself (relative to the suite file), with nothing on the command line
    (tmp_path / "plugins" / "suite.yaml").write_text(yaml.safe_dump(_suite("file", {"imports": ["my_methods.py"]})))
    again = _slimbench(["run", str(tmp_path / "plugins" / "suite.yaml"), "--results", "res", "--dry-run"], work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done") == 2   # same plugin sha256 -> same run_ids -> already recorded


def test_a_plugin_reusing_a_builtin_name_is_an_error_naming_both(tmp_path: Path):
    plugin = tmp_path / "clash.py"
    plugin.write_text(PLUGIN_CODE.replace("{prefix}", "clash").replace('"clash.halve"', '"prune.magnitude"'))
    done = _slimbench(["list", "methods", "--import", str(plugin)], tmp_path)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()[-1]
    assert "prune.magnitude" in err and "slimbench.methods.pruning" in err and str(plugin) in err, err


@pytest.mark.parametrize("spec", ["no_such_module_xyz", "missing/file.py"])
def test_unimportable_plugin_is_a_clear_error(spec: str, tmp_path: Path):
    done = _slimbench(["list", "methods", "--import", spec], tmp_path)
    assert done.returncode == 2 and "plugin" in done.stderr and spec.split("/")[-1] in done.stderr
