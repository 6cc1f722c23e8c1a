"""Editors can follow `slimbench.*` across the rooms to the files in this repository.

The rooms are mapped into `slimbench` by `package-dir`; installed editable as a link tree (reproduce.sh) the names
resolve through plain files, which jedi (the engine behind most Python editors) follows. jedi runs here as an editor
opened at the repository root does: on this environment's interpreter and sys.path, with the root itself first on
it, where `slimbench/` must not hide the rooms. Each call below crosses a room and must land on the line that
defines the name, in the real source file.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
from pathlib import Path

import jedi
import pytest

ROOT = Path(__file__).resolve().parent.parent

# (file that uses the name, the name as written there, folder that defines it)
CROSSINGS = [
    ("harness/run/runner.py", "build_task", "tasks"),
    ("harness/run/runner.py", "build_method", "methods"),
    ("harness/run/runner.py", "fit", "baselines"),
    ("harness/run/runner.py", "evaluate_test", "harness/measure"),
    ("harness/run/runner.py", "measure_latency", "deploy/latency"),   # through the package's re-export
    ("methods/quantization.py", "export_onnx", "deploy"),
    ("baselines/training.py", "Task", "tasks"),
    ("deploy/runtimes.py", "NotApplicableError", "core"),
    ("harness/cli.py", "commands.cmd_run", "harness"),
    ("harness/commands.py", "SuiteRunner", "harness/run"),
]


@pytest.fixture(scope="module")
def project() -> jedi.Project:
    return jedi.Project(ROOT, environment_path=sys.prefix)


def _definition(folder: str, name: str) -> tuple[Path, int]:
    """The one file under `folder` that defines `name` at module level, and the line of the definition."""
    pattern = re.compile(rf"^(?:async def|def|class) {re.escape(name)}\b", re.MULTILINE)
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        text = path.read_text()
        found += [(path, text[: m.start()].count("\n") + 1) for m in pattern.finditer(text)]
    assert len(found) == 1, f"{name} should be defined once under {folder}/, found {found}"
    return found[0]


def _use(source: Path, dotted: str) -> tuple[int, int]:
    """Line and column of the first use of `dotted` in code (not in an import, a string or a comment)."""
    tree = ast.parse(source.read_text())
    imports = {line for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
               for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)}
    parts = dotted.split(".")
    want = [p for part in parts for p in (part, ".")][:-1]   # NAME . NAME ...
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source.read_text()).readline)
              if t.type in (tokenize.NAME, tokenize.OP)]
    for i in range(len(tokens) - len(want) + 1):
        window = tokens[i: i + len(want)]
        if [t.string for t in window] != want or window[0].start[0] in imports:
            continue
        if i and tokens[i - 1].string == ".":   # an attribute of something else with the same name
            continue
        return window[-1].start
    raise AssertionError(f"{source.relative_to(ROOT)} no longer uses {dotted}")


@pytest.mark.parametrize(("source", "name", "folder"), CROSSINGS,
                         ids=[f"{s.split('/')[-1]}->{n}" for s, n, _ in CROSSINGS])
def test_a_cross_room_call_resolves_to_its_source(project: jedi.Project, source: str, name: str, folder: str):
    path = ROOT / source
    line, column = _use(path, name)
    want_file, want_line = _definition(folder, name.rpartition(".")[2])
    found = jedi.Script(path=path, project=project).goto(line, column, follow_imports=True)
    assert found, f"jedi cannot resolve {name} at {source}:{line}:{column}"
    where = {(Path(os.path.realpath(n.module_path)), n.line) for n in found if n.module_path is not None}
    assert where == {(want_file, want_line)}, f"{name} at {source}:{line} resolves to {where}"
