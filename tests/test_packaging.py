"""The wheel is one `slimbench` package with its suites and claims; installed without the source tree it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the checkout's files, so no stale build/ folder can add or hide a module."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file() and not rel.startswith("results/"):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("slimbench-*.whl")
    return path


def test_wheel_holds_one_namespace_with_suites_and_claims(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"slimbench"}, tops
    for needed in ("slimbench/__init__.py", "slimbench/core/registry.py", "slimbench/tasks/base.py",
                   "slimbench/baselines/registry.py", "slimbench/deploy/packing.py", "slimbench/methods/base.py",
                   "slimbench/harness/cli.py", "slimbench/configs/quick.yaml", "slimbench/configs/full.yaml",
                   "slimbench/configs/claims.yaml"):
        assert needed in names, needed
    shipped = {Path(n).name for n in names if n.startswith("slimbench/configs/") and n.endswith(".yaml")}
    assert shipped == {p.name for p in (ROOT / "configs").glob("*.yaml")}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "slimbench = slimbench.harness.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_wheel_runs_from_any_directory(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    code = ("import slimbench, pathlib; from slimbench.harness.run.suite import load_suite; "
            "from slimbench.harness.replicate.claims_file import load_claims; "
            "s = load_suite('quick'); c = load_claims(); "
            "print(pathlib.Path(slimbench.__file__).parent.parent, len(s.cells), len(c))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, cells, claims = ran.stdout.split()
    assert Path(where) == site          # the installed copy, not the source tree
    assert int(cells) > 10 and int(claims) > 0
