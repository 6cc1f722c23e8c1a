"""The rooms only import downwards, the core imports nothing of ours, and no module imports itself in a circle.

Read from the source with `ast`, so lazy imports inside functions count too: a lazy import up the stack is
still a dependency up the stack.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = {"core": "core", "tasks": "tasks", "baselines": "baselines", "deploy": "deploy", "methods": "methods",
         "harness": "harness", "configs": "configs"}
ALLOWED = {   # room -> rooms it may import (besides itself)
    "core": set(),
    "tasks": {"core"},
    "deploy": {"core"},
    "baselines": {"core", "tasks"},
    "methods": {"core", "tasks", "baselines", "deploy"},
    "harness": {"core", "tasks", "baselines", "deploy", "methods", "configs"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for room, folder in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join(("slimbench", room) + (parts[:-1] if parts[-1] == "__init__" else parts))
            out[name] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every slimbench module this file imports, at any depth of the file."""
    tree = ast.parse(path.read_text())
    found = set()
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("slimbench")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("slimbench"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


MODULES = _modules()
GRAPH = {name: {m for m in _imports(path, name) if m in MODULES and m != name} for name, path in MODULES.items()}


def _room(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    room = _room(module)
    if room == "configs":
        assert not GRAPH[module]
        return
    up = sorted(m for m in GRAPH[module] if _room(m) != room and _room(m) not in ALLOWED[room])
    assert not up, (f"{module} ({room}) imports {up}; "
                    f"{room} may import only {sorted(ALLOWED[room]) or 'nothing of ours'}")


def test_no_module_imports_the_old_top_level_names():
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for mod in mods:
                assert mod.split(".")[0] not in {"harness", "methods", "tasks", "baselines"}, f"{name}: import {mod}"


def test_no_circular_imports():
    """Package __init__ files re-export their room, so edges into a package's own __init__ are skipped."""
    graph = {m: {d for d in deps if not (d == m.rpartition(".")[0])} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.slow
def test_the_rooms_import_cleanly_one_by_one():
    """Each room imports on its own in a fresh interpreter (no hidden reliance on import order)."""
    import subprocess
    import sys

    code = ";".join(f"import slimbench.{room}" for room in ("core", "tasks", "deploy", "baselines", "methods"))
    done = subprocess.run([sys.executable, "-c", code + ";import sys;"
                           "bad=[m for m in sys.modules if m.startswith('slimbench.harness')];"
                           "print(bad); sys.exit(1 if bad else 0)"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
