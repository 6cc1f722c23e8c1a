"""Run records on disk: the committed version-1 files read with every value they hold, version 2 stores the
compression evidence once and writes back byte for byte, and a failed cell's parts are None."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from slimbench.core.errors import CheckpointError
from slimbench.harness.run.records import RECORD_VERSION, RunRecord, read_record, write_record

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted(ROOT.glob("results/*/runs/*.json"))


def _v1(data: dict[str, Any]) -> bool:
    return data.get("record_version", 1) == 1


def _holds(big: Any, small: Any) -> bool:
    """Every key of `small` is in `big` with an equal value (dicts compared key by key, all the way down)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _holds(big[k], v) for k, v in small.items())
    return big == small


def test_there_are_committed_version_1_records_to_read():
    assert len(COMMITTED) > 100
    assert any(_v1(json.loads(p.read_text())) for p in COMMITTED)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_a_committed_record_reads_with_every_value_it_holds(path: Path):
    raw = json.loads(path.read_text())
    rec = read_record(path)
    assert rec.run_id == path.stem == raw["run_id"] and rec.record_version == RECORD_VERSION
    if not _v1(raw):
        assert json.dumps(rec.to_dict(), indent=2) + "\n" == path.read_text()
        return
    assert rec.to_dict()["config"] == raw["config"] and rec.details == raw["details"]
    assert _holds(asdict(rec.provenance), {k: raw[k] for k in ("versions", "plugins", "git", "created")})
    assert _holds(asdict(rec.hardware), raw["hardware"]) and rec.wall_seconds == raw["wall_seconds"]
    if raw["status"] != "ok":
        assert rec.metrics is rec.reference is rec.compression is rec.artifact is None
        return
    assert rec.metrics is not None and rec.reference is not None and rec.compression is not None
    assert _holds(rec.metrics.to_dict(), raw["metrics"]) and asdict(rec.reference) == raw["reference"]
    assert _holds(asdict(rec.baseline_training), raw["baseline_training"])
    assert _holds(asdict(rec.artifact), raw["artifact"]) and _holds(asdict(rec.wandb), raw["wandb"])
    # version 1 kept the labels, the verdict and the claim twice; the one copy read gives back both
    comp, evidence = rec.compression, raw["compression"]["evidence"]
    views = {"label": comp.label, "storage": comp.storage, "compute": comp.compute, "verified": comp.verified,
             "disagreements": comp.disagreements, "requested": comp.requested, "achieved": comp.achieved,
             "claimed": asdict(comp.claimed), "storage_formats": comp.storage_formats}
    assert views == {k: v for k, v in raw["compression"].items() if k != "evidence"}
    assert asdict(comp.evidence.storage) == evidence["storage"] and asdict(comp.evidence.compute) == evidence["compute"]
    assert comp.verified == evidence["verified"] and asdict(comp.claimed) == evidence["claimed"]


def test_every_committed_record_written_as_version_2_reads_back_the_same_and_rewrites_byte_for_byte(tmp_path: Path):
    for path in COMMITTED:
        rec = read_record(path)
        written = write_record(tmp_path / path.parent.parent.name, rec)
        again = read_record(written)
        assert again == rec, path
        first = written.read_bytes()
        write_record(written.parent, again)
        assert written.read_bytes() == first, path


def test_version_2_keeps_the_evidence_once_and_the_provenance_together(tmp_path: Path):
    ok = next(p for p in COMMITTED if json.loads(p.read_text())["status"] == "ok")
    data = json.loads(write_record(tmp_path, read_record(ok)).read_text())
    assert data["record_version"] == 2
    assert set(data["compression"]) == {"baseline", "storage_formats", "evidence"}
    assert set(data["compression"]["evidence"]) == {"storage", "compute", "claimed", "disagreements"}
    assert set(data["provenance"]) == {"versions", "plugins", "git", "created"}
    assert not {"versions", "plugins", "git", "created"} & set(data)


def test_a_failed_record_has_no_measured_parts_in_either_version(tmp_path: Path):
    raw = json.loads(next(p for p in COMMITTED if json.loads(p.read_text())["status"] == "ok").read_text())
    failed = {**raw, "status": "failed", "metrics": {}, "reference": {}, "compression": {}, "artifact": {},
              "baseline_training": {}, "wandb": {}, "details": {"error": "RuntimeError: out of memory"}}
    rec = RunRecord.from_dict(failed)
    assert rec.metrics is rec.reference is rec.compression is rec.artifact is rec.baseline_training is None
    data = json.loads(write_record(tmp_path, rec).read_text())
    assert data["metrics"] is data["compression"] is None and RunRecord.from_dict(data) == rec


def test_an_unreadable_or_newer_record_names_itself(tmp_path: Path):
    raw = json.loads(COMMITTED[0].read_text())
    for name, data in (("newer", {**raw, "record_version": RECORD_VERSION + 1}),
                       ("unknown-part", {**read_record(COMMITTED[0]).to_dict(), "surprise": 1})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match=f"run record .*{name}.json is unreadable"):
            read_record(path)
