"""`slimbench export`: committed records of two suites (and one n/a cell) as one table that `datasets` loads
offline, row for row equal to the records; the CSV holds the same table, a rerun gives the same bytes, the card
lists every column and the rows per suite, and the committed results/dataset is the export of results/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from slimbench.core.errors import SlimbenchError
from slimbench.harness.cli import main
from slimbench.harness.report.dataset_columns import COLUMNS, Column
from slimbench.harness.report.export import CARD, CSV, PARQUET, export
from slimbench.harness.run.records import RunRecord, load_records

ROOT = Path(__file__).resolve().parent.parent
UNMEASURED = ROOT / "results/standard/runs/cffc96d024ac.json"   # a committed n/a cell: no figures, a reason


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for suite in ("quick", "prune35"):
        shutil.copytree(ROOT / "results" / suite / "runs", root / suite / "runs")
    (root / "standard" / "runs").mkdir(parents=True)
    shutil.copy(UNMEASURED, root / "standard" / "runs")
    (root / ".reproduce" / "runs").mkdir(parents=True)   # scratch space: never exported
    shutil.copy(UNMEASURED, root / ".reproduce" / "runs")
    return root


def _records(root: Path) -> list[RunRecord]:
    return [r for suite in ("prune35", "quick", "standard") for r in load_records(root / suite / "runs")]


def _csv_table(path: Path, schema: pa.Schema) -> pa.Table:
    """The CSV read back with the Parquet file's types; an empty field is null and nothing else is."""
    options = pacsv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True,
                                   true_values=["true"], false_values=["false"])
    return pacsv.read_csv(path, convert_options=options).cast(schema)


def test_the_table_loads_with_datasets_offline_row_for_row_equal_to_the_records(results: Path, tmp_path: Path):
    from datasets import load_dataset

    done = export(results, tmp_path / "out")
    records = _records(results)
    assert done.rows == len(records) == 22 + 18 + 1
    runs = load_dataset("parquet", data_files=str(tmp_path / "out" / PARQUET), split="train",
                        cache_dir=str(tmp_path / "hf"))
    assert runs.num_rows == len(records) and runs.column_names == [c.name for c in done.columns]
    for row, rec in zip(runs, records):
        assert (row["suite"], row["run_id"], row["status"], row["seed"]) == (rec.suite, rec.run_id, rec.status,
                                                                             rec.seed)
        if rec.metrics is None:
            assert row["accuracy"] is row["params"] is row["reference.accuracy"] is None
            assert row["error"] == rec.details["not_applicable"] and row["status"] == "n/a"
            continue
        assert rec.reference is not None and rec.compression is not None
        assert (row["accuracy"], row["params"], row["stored_bytes"], row["macs"]) == (
            rec.metrics.accuracy, rec.metrics.params, rec.metrics.stored_bytes, rec.metrics.macs)
        assert (row["reference.accuracy"], row["reference.params"]) == (rec.reference.accuracy, rec.reference.params)
        assert row["latency.onnxruntime.b1_ms"] == rec.metrics.latency["onnxruntime"]["b1_ms"]
        assert row["label"] == rec.compression.label and row["git.commit"] == rec.provenance.git.commit
        assert row["version.torch"] == rec.provenance.versions["torch"] and row["hardware.cpu"] == rec.hardware.cpu
        for name, value in rec.config["method"]["params"].items():
            if isinstance(value, bool | int | float | str):
                assert row[f"param.{name}"] == value


def test_scalar_parameters_get_typed_columns_and_named_families_their_keys(results: Path, tmp_path: Path):
    schema = pq.read_schema(export(results, tmp_path / "out").paths[0])
    assert schema.field("param.sparsity").type == pa.float64() and schema.field("param.finetune").type == pa.bool_()
    assert schema.field("seed").type == pa.int64() and schema.field("is_baseline").type == pa.bool_()
    assert {"corrupted.blur.3", "corrupted.white_noise.1", "speedup.eager.bn.low", "kernel_pin.ATEN_CPU_CAPABILITY",
            "reference.latency.eager.bn_ms"} <= set(schema.names)
    assert schema.field("accuracy").metadata == {b"description": b"top-1 accuracy on the test split, of the model "
                                                                 b"as deployed"}
    table = pq.read_table(tmp_path / "out" / PARQUET)
    quick = load_records(results / "quick" / "runs")[0]
    assert quick.metrics is not None and quick.metrics.robustness is not None
    row = table.filter(pc.equal(table["run_id"], quick.run_id)).to_pylist()[0]
    assert row["corrupted.blur.2"] == quick.metrics.robustness.corrupted_accuracy["blur"]["2"]
    assert row["speedup_b1_x"] == quick.metrics.speedup[quick.metrics.runtime]["b1"].ratio


def test_the_csv_holds_the_parquet_table(results: Path, tmp_path: Path):
    export(results, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / PARQUET)
    assert _csv_table(tmp_path / "out" / CSV, table.schema).equals(table.replace_schema_metadata(None))


def test_a_rerun_gives_the_same_bytes(results: Path, tmp_path: Path):
    export(results, tmp_path / "a")
    export(results, tmp_path / "b")
    for name in (PARQUET, CSV, CARD):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_card_is_a_dataset_card_listing_every_column_and_the_rows_per_suite(results: Path, tmp_path: Path):
    done = export(results, tmp_path / "out")
    text = (tmp_path / "out" / CARD).read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "apache-2.0"
    assert header["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET}]}]
    assert "| quick | 22 | 22 | 0 |" in text and "| prune35 | 18 | 18 | 0 |" in text
    assert "| standard | 1 | 0 | 1 |" in text and "| all | 41 | 40 | 1 |" in text
    listed = [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]
    assert listed == [c.name for c in done.columns] == pq.read_schema(done.paths[0]).names
    fixed = [spec.name for spec in COLUMNS if isinstance(spec, Column)]
    assert [name for name in listed if name in fixed] == fixed   # every fixed column, in spec order


def test_no_records_is_one_clear_error_naming_the_folder(tmp_path: Path):
    (tmp_path / "empty" / "quick" / "runs").mkdir(parents=True)
    with pytest.raises(SlimbenchError, match=f"no run records under {tmp_path / 'empty'}"):
        export(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SlimbenchError, match="does not exist"):
        export(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_exports_one_suite_folder_too(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["export", str(results / "quick")]) == 0
    assert "22 rows × " in capsys.readouterr().out
    assert pq.read_table(results / "quick" / "dataset" / PARQUET).num_rows == 22
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


def test_the_committed_dataset_is_the_export_of_the_committed_results(tmp_path: Path):
    export(ROOT / "results", tmp_path / "out")
    for name in (CSV, CARD):
        assert (tmp_path / "out" / name).read_bytes() == (ROOT / "results" / "dataset" / name).read_bytes(), (
            f"results/dataset/{name} is stale: run `slimbench export results results/dataset`")
    assert pq.read_table(tmp_path / "out" / PARQUET).equals(pq.read_table(ROOT / "results" / "dataset" / PARQUET))
