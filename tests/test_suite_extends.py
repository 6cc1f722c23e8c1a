"""Suites written as their differences from base files (`extends:`) expand to exactly the cells they always had.

tests/data/suite_run_ids.json pins every shipped suite's (run_id, label) pairs. A run_id changes only with what
determines a result (a suite edit, a code version): after such a change is meant, rewrite the fixture with
`.venv/bin/python tests/test_suite_extends.py` and review its diff.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from slimbench.core.errors import ConfigError
from slimbench.harness.run.suite import load_suite
from slimbench.harness.run.suite_files import merge, packaged_suites

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "data" / "suite_run_ids.json"
PINNED: dict[str, list[list[str]]] = json.loads(FIXTURE.read_text())

# Committed records whose cells the suites no longer have (written before a version bump; they await a rerun).
# Rerunning their suites removes them from this list; nothing may join it.
STALE_RECORDS = {
    "overview": {"2b3ea6c0bb14", "661d71a43e68", "6829304e9ad0", "737c1225c6c5", "93c5621e1fd0", "981f3f2ba8de",
                 "98d42b32a658", "9d28d4c54095", "ac4d5bf66d82", "b26ed5bb1993", "c43cd1b21613", "ce76cb870389",
                 "d5698833f14f", "edada4de3277"},
    "standard": {"20abec7f09ad", "9a21bdc3054b", "a05983cb0e0c", "e98c5bcb2bf0"},
}
# Method entries that several studies run alike: a suite's methods are its own list (lists replace, never merge),
# so these stay written in each suite that runs them. Every other long line lives in one place.
SHARED_METHOD_ENTRIES = {
    "params: {observer: minmax, calibration_samples: 512}",
    "- {name: share.kmeans, params: {clusters: 16}}",
    "params: {params_ratio: 2.0, whiten: true, allocation: global}",
    "- {name: prune.magnitude, params: {sparsity: 0.9, schedule: gradual, scope: lamp}}",
    "- {name: prune.random, params: {sparsity: 0.9, schedule: gradual, scope: lamp}}",
    "- {name: prune.magnitude, params: {sparsity: 0.7, schedule: gradual, scope: lamp}}",
}


def cell_ids(suite_name: str) -> list[list[str]]:
    return sorted([cell.run_id, cell.label] for cell in load_suite(suite_name).cells)


def test_the_fixture_names_every_shipped_suite_and_no_base():
    assert sorted(PINNED) == sorted(packaged_suites())
    assert {"base", "base_embedded"}.isdisjoint(packaged_suites())


@pytest.mark.parametrize("name", sorted(PINNED))
def test_suite_expands_to_its_pinned_cells(name: str):
    assert cell_ids(name) == PINNED[name]


def test_committed_records_belong_to_their_suites():
    unknown: dict[str, set[str]] = defaultdict(set)
    for path in sorted(ROOT.glob("results/*/runs/*.json")):
        record = json.loads(path.read_text())
        if record.get("suite") in PINNED and record["run_id"] not in {r for r, _ in PINNED[record["suite"]]}:
            unknown[record["suite"]].add(record["run_id"])
    grown = {suite: sorted(ids - STALE_RECORDS.get(suite, set())) for suite, ids in unknown.items()}
    assert not any(grown.values()), f"records of cells no suite has: {grown}"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE = """\
suite: not-inherited
description: the base's own
tasks: [digits]
models: [tiny-cnn]
methods: [baseline, {name: prune.magnitude, params: {sparsity: 0.5}}]
exclude: [{method: baseline}]
train: {epochs: 3, batch_size: 64, lr: 0.01}
teacher: {name: tiny-cnn, params: {width: 32}}
"""


def test_mappings_merge_key_by_key_and_lists_replace(tmp_path: Path):
    _write(tmp_path, "shared.yaml", BASE)
    suite = load_suite(_write(tmp_path, "mine.yaml", "extends: shared\ntrain: {epochs: 1}\nmethods: [baseline]\n"
                                                     "exclude: []\nteacher: {train: {epochs: 2}}\n"))
    (cell,) = suite.cells
    assert (suite.name, suite.description) == ("mine", "")
    assert cell.method.name == "baseline"
    assert (cell.train.epochs, cell.train.batch_size, cell.train.lr) == (1, 64, 0.01)
    assert (cell.teacher.name, cell.teacher.params["width"], cell.teacher_train.epochs) == ("tiny-cnn", 32, 2)


def test_a_named_mapping_replaces_the_base_entry_whole(tmp_path: Path):
    _write(tmp_path, "shared.yaml", BASE)
    suite = load_suite(_write(tmp_path, "mine.yaml", "extends: shared.yaml\nteacher: {name: tiny-cnn}\n"))
    assert {c.method.name for c in suite.cells} == {"prune.magnitude"}   # the base's methods, less its exclusion
    assert suite.cells[0].teacher.params["width"] == 16   # tiny-cnn's default, not the base's 32


def test_bases_merge_in_order_and_resolve_by_path_or_shipped_name(tmp_path: Path):
    _write(tmp_path, "shared/first.yaml", BASE)
    _write(tmp_path, "shared/second.yaml", "train: {epochs: 4}\n")
    suite = load_suite(_write(tmp_path, "suites/mine.yaml", "extends: [../shared/first.yaml, ../shared/second]\n"))
    assert suite.cells[0].train.epochs == 4 and suite.cells[0].train.lr == 0.01
    shipped = load_suite(_write(tmp_path, "on_base.yaml", "extends: base\ntasks: [digits]\nmodels: [tiny-cnn]\n"
                                                          "methods: [baseline]\n"))
    assert (shipped.cells[0].train.lr, shipped.cells[0].finetune.lr) == (0.004, 0.0005)
    assert merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}, "d": None}


def test_a_cycle_is_one_error_naming_the_files(tmp_path: Path):
    _write(tmp_path, "a.yaml", "extends: b\n" + BASE)
    _write(tmp_path, "b.yaml", "extends: a\n")
    with pytest.raises(ConfigError, match=r"cycle \(a\.yaml -> b\.yaml -> a\.yaml\)"):
        load_suite(tmp_path / "a.yaml")


def test_an_unknown_base_is_one_error_naming_the_choices(tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        load_suite(_write(tmp_path, "mine.yaml", "extends: basse\n" + BASE))
    assert "`extends: basse` names no file" in str(error.value)
    assert "base, base_embedded" in str(error.value) and "quick" in str(error.value)


def test_a_base_file_does_not_run():
    with pytest.raises(ConfigError, match="no `methods:`: it is a base"):
        load_suite("base_embedded")


def _long_lines(path: Path) -> set[str]:
    """Lines of 40+ characters, trailing comments and indentation removed; comment lines are not counted."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in path.read_text().splitlines())
    return {line for line in lines if len(line) >= 40 and not line.startswith("#")}


def test_no_long_line_is_written_in_three_suite_files():
    files: dict[str, list[str]] = defaultdict(list)
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name != "claims.yaml":
            for line in _long_lines(path):
                files[line].append(path.stem)
    copied = {line: names for line, names in files.items() if len(names) >= 3 and line not in SHARED_METHOD_ENTRIES}
    assert not copied, f"lines in three or more suite files (move them to a base file): {copied}"


if __name__ == "__main__":   # rewrite the fixture from the suites as they are now
    rows = {name: cell_ids(name) for name in sorted(packaged_suites())}
    body = ",\n".join(f"  {json.dumps(name)}: [\n" + ",\n".join(f"    {json.dumps(r, ensure_ascii=False)}" for r in ids)
                      + "\n  ]" for name, ids in rows.items())
    FIXTURE.write_text("{\n" + body + "\n}\n")
