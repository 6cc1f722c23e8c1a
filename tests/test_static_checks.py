"""The linter and the type checker pass on the whole tree, with the project's own configuration (pyproject.toml).

Both are dev dependencies that `reproduce.sh` installs, so a missing one fails here rather than skipping. mypy
checks the installed link tree (the strict editable install under build/), where the top-level rooms appear as
`slimbench.core`, `slimbench.tasks`, ... and imports between them resolve as they do at run time.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import slimbench

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)


def _link_tree() -> Path:
    """The folder that holds the installed `slimbench` package of links (not the repository's own slimbench/).

    Run from the repository root, `find_spec` sees only the repository's folder; the package's `__path__`, which
    `extend_path` widens to every `slimbench` folder on sys.path, also holds the link tree.
    """
    spec = importlib.util.find_spec("slimbench")
    found = list(spec.submodule_search_locations or []) if spec is not None else []
    own = (ROOT / "slimbench").resolve()
    for location in [*found, *slimbench.__path__]:
        path = Path(location)
        if (path / "core").is_dir() and path.resolve() != own:
            return path.parent
    raise AssertionError(f"no installed slimbench link tree among {[*found, *slimbench.__path__]}; "
                         f"run ./reproduce.sh to install the project (strict editable install)")


def test_ruff_finds_nothing():
    result = _run(["ruff", "check", "--no-fix", "."], ROOT)
    assert result.returncode == 0, f"ruff check . failed:\n{result.stdout}{result.stderr}"


@pytest.mark.slow
def test_mypy_finds_nothing():
    result = _run(["mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache"),
                   "-p", "slimbench"], _link_tree())
    assert result.returncode == 0, f"mypy -p slimbench failed:\n{result.stdout}{result.stderr}"
