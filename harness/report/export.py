"""`slimbench export`: every run record under a results folder as one flat table, so the measurements can be
analysed with any dataframe or dataset library and no harness code.

Writes `runs.parquet`, `runs.csv` (the same table) and a dataset card, `README.md`, whose column list and row counts
come from the records and from the one column spec (`dataset_columns.COLUMNS`). The same records give the same
bytes: rows in suite and run_id order, columns in spec order, no timestamps.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimbench.core.errors import SlimbenchError
from slimbench.harness.report.dataset_columns import BOOL, COLUMNS, FLOAT, INT, STR, Column, infer_kind, to_json
from slimbench.harness.run.records import RunRecord, atomic_write_bytes, atomic_write_text, load_records

PARQUET, CSV, CARD = "runs.parquet", "runs.csv", "README.md"


@dataclass
class DataColumn:
    name: str
    kind: str                        # STR, INT, FLOAT or BOOL (dataset_columns)
    meaning: str
    values: list[Any]                # one per row, None where the record has no value


@dataclass
class Export:
    """What was written: the table's columns and where."""

    columns: list[DataColumn]
    out: Path

    @property
    def rows(self) -> int:
        return len(self.columns[0].values)

    @property
    def paths(self) -> list[Path]:
        return [self.out / name for name in (PARQUET, CSV, CARD)]


def suite_folders(results: Path) -> list[Path]:
    """The suite folders of a results root (hidden ones, e.g. .reproduce, are scratch space), or `results` itself
    when it is one suite's folder."""
    if (results / "runs").is_dir():
        return [results]
    if not results.is_dir():
        raise SlimbenchError(f"results folder {results} does not exist")
    return [p for p in sorted(results.iterdir()) if p.is_dir() and not p.name.startswith(".") and (p / "runs").is_dir()]


def collect(results: Path) -> list[RunRecord]:
    records = [record for folder in suite_folders(results) for record in load_records(folder / "runs")]
    if not records:
        raise SlimbenchError(f"no run records under {results}: export reads {results}/<suite>/runs/*.json "
                             "(or RESULTS/runs/*.json for one suite's folder); run a suite first")
    return records


def _cell(value: Any, kind: str, name: str) -> Any:
    """A value as its column stores it. Empty text is null, so the CSV's empty field reads back the same."""
    if value is None or (isinstance(value, str) and not value):
        return None
    if kind == STR:
        return value if isinstance(value, str) else to_json(value)
    if kind == FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if (kind == INT and isinstance(value, int) and not isinstance(value, bool)) or (
            kind == BOOL and isinstance(value, bool)):
        return value
    raise SlimbenchError(f"column {name}: {value!r} is not a {kind}")


def _column(name: str, kind: str, meaning: str, values: list[Any]) -> DataColumn:
    return DataColumn(name, kind, meaning, [_cell(v, kind, name) for v in values])


def build_columns(records: list[RunRecord]) -> list[DataColumn]:
    """The table, column by column in spec order; a family's columns in key order, those no record fills left out."""
    columns: list[DataColumn] = []
    for spec in COLUMNS:
        if isinstance(spec, Column):
            columns.append(_column(spec.name, spec.kind, spec.meaning, [spec.read(r) for r in records]))
            continue
        per_record = [spec.read(r) for r in records]
        for key in sorted({key for values in per_record for key in values}):
            values = [found.get(key) for found in per_record]
            if any(v is not None for v in values):
                kind = spec.kind or infer_kind(values) or STR   # mixed kinds: JSON text
                columns.append(_column(spec.name(key), kind, spec.meaning_of(key), values))
    repeated = [name for name, n in Counter(c.name for c in columns).items() if n > 1]
    if repeated:
        raise SlimbenchError(f"export columns named twice: {', '.join(repeated)}")
    return columns


# -- files ------------------------------------------------------------------------------------------------------

def parquet_bytes(columns: list[DataColumn]) -> bytes:
    """The table as Parquet, each column's meaning in its field metadata; pyarrow writes no timestamp."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {STR: pa.string(), INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_()}
    schema = pa.schema([pa.field(c.name, types[c.kind], metadata={"description": c.meaning}) for c in columns])
    table = pa.Table.from_arrays([pa.array(c.values, type=types[c.kind]) for c in columns], schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)   # repr: the shortest text that reads back exact


def csv_text(columns: list[DataColumn]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    for row in zip(*(c.values for c in columns)):
        writer.writerow([_csv_field(v) for v in row])
    return buffer.getvalue()


def _size_category(rows: int) -> str:
    """The Hugging Face card's size bucket."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "n>1M"


def _cells(values: list[Any]) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def card_text(columns: list[DataColumn]) -> str:
    """The dataset card: a Hugging Face YAML header, then rows per suite and every column with its meaning."""
    by_name = {c.name: c.values for c in columns}
    rows = len(by_name["run_id"])
    counts = Counter(zip(by_name["suite"], by_name["status"]))
    statuses = sorted({status for _, status in counts}, key=lambda s: (s != "ok", s))
    lines = ["---", "license: apache-2.0", "pretty_name: slimbench run records", "tags:", "- model-compression",
             "- benchmark", "size_categories:", f"- {_size_category(rows)}", "configs:", "- config_name: default",
             "  data_files:", "  - split: train", f"    path: {PARQUET}", "---", "",
             "# slimbench run records", "",
             "One row per benchmark cell (task × model × method × parameters × seed) of every suite: the figures the "
             "harness measured on the deployed model, its trained baseline measured beside it in the same process "
             "(`reference.*`), the compression evidence behind the labels, and where the record came from (commit, "
             "package versions, CPU, kernels).", "",
             f"Written by `slimbench export` from the suites' run records (`<suite>/runs/*.json`); the same records "
             f"give the same files byte for byte. `{PARQUET}` carries each column's meaning in its field metadata; "
             f"`{CSV}` is the same table, an empty field being null. A failed cell (status `failed`) has no figures; "
             "a column named by a key (a runtime, corruption, parameter or package) is null where the record lacks "
             "that key.", "",
             "```python", "from datasets import load_dataset", "",
             f'runs = load_dataset("parquet", data_files="{PARQUET}", split="train")', "```", "",
             "## Rows", "", _cells(["suite", "rows", *statuses]), _cells(["---"] * (2 + len(statuses)))]
    for suite in sorted({suite for suite, _ in counts}):
        lines.append(_cells([suite, sum(n for (s, _), n in counts.items() if s == suite),
                             *(counts[(suite, status)] for status in statuses)]))
    lines += [_cells(["all", rows, *(sum(n for (_, s), n in counts.items() if s == status) for status in statuses)]),
              "", "## Columns", "", f"{len(columns)} columns, in this order.", "",
              _cells(["column", "type", "meaning"]), _cells(["---"] * 3)]
    lines += [_cells([f"`{c.name}`", c.kind, c.meaning]) for c in columns]
    return "\n".join(lines) + "\n"


def export(results: Path, out: Path) -> Export:
    """Read every record under `results`, write the table and its card into `out` (each file atomically)."""
    columns = build_columns(collect(results))
    atomic_write_bytes(out / PARQUET, parquet_bytes(columns))
    atomic_write_text(out / CSV, csv_text(columns))
    atomic_write_text(out / CARD, card_text(columns))
    return Export(columns, out)
