"""Run records: one JSON file per cell, written atomically; the only source of tables and plots."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from slimbench.core.errors import CheckpointError
from slimbench.harness.measure.evidence_data import Compression
from slimbench.harness.measure.figures import Metrics, Reference, without_unmeasured
from slimbench.harness.run import record_v1
from slimbench.harness.run.record_parts import Artifact, BaselineTraining, Fit, Hardware, Provenance, WandbRun

RECORD_VERSION = 2   # 2: the compression evidence stored once, provenance as one part (version 1: record_v1)

T = TypeVar("T")


NOT_APPLICABLE = "n/a"    # the method declared it cannot apply to the cell's architecture (`Method.not_applicable`)
FINAL = ("ok", NOT_APPLICABLE)   # statuses a rerun keeps; a "failed" cell is retried


@dataclass
class RunRecord:
    """One cell's run. A part is None when the cell was never measured (status "failed" or "n/a")."""

    run_id: str
    suite: str
    status: str
    task: str
    model: str
    method: str
    family: str
    seed: int
    # the resolved cell config the run_id hashes, kept exactly as hashed (its shape is harness.run.suite's)
    config: dict[str, Any]
    metrics: Metrics | None                # the optimised model, deployed and measured
    reference: Reference | None            # the trained baseline, measured in the same process
    compression: Compression | None        # storage and compute labels from the evidence, the claim checked
    # what the method reports about itself (each method its own keys), plus the task, stages and given params
    details: dict[str, Any] = field(default_factory=dict)
    baseline_training: BaselineTraining | None = None
    fits: list[Fit] = field(default_factory=list)   # the cell's own training runs (fine-tunes, students), timed
    artifact: Artifact | None = None
    provenance: Provenance = field(default_factory=Provenance)
    hardware: Hardware = field(default_factory=Hardware)
    wall_seconds: dict[str, float] = field(default_factory=dict)   # per phase of the cell, and "total"
    wandb: WandbRun | None = None
    record_version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["metrics"] is not None:
            data["metrics"] = without_unmeasured(data["metrics"])
        if data["baseline_training"] is not None:
            data["baseline_training"] = BaselineTraining.without_untimed(data["baseline_training"])
        if not data["fits"]:   # parts added after records exist stay out when empty: older records keep their bytes
            del data["fits"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        version = data.get("record_version", 1)
        if version == 1:
            data = record_v1.upgrade(data, RECORD_VERSION)
        elif version != RECORD_VERSION:
            raise ValueError(f"record version {version} is not one this code reads (1 to {RECORD_VERSION})")
        return cls(**{**data, "metrics": _optional(Metrics.from_dict, data["metrics"]),
                      "reference": _optional(lambda d: Reference(**d), data["reference"]),
                      "compression": _optional(Compression.from_dict, data["compression"]),
                      "baseline_training": _optional(lambda d: BaselineTraining(**d), data.get("baseline_training")),
                      "fits": [Fit(**f) for f in data.get("fits", [])],
                      "artifact": _optional(lambda d: Artifact(**d), data.get("artifact")),
                      "provenance": Provenance.from_dict(data.get("provenance") or {}),
                      "hardware": Hardware.from_dict(data.get("hardware") or {}),
                      "wandb": _optional(lambda d: WandbRun(**d), data.get("wandb"))})


def _optional(build: Callable[[dict[str, Any]], T], data: dict[str, Any] | None) -> T | None:
    return None if data is None else build(data)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_record(runs_dir: Path, record: RunRecord) -> Path:
    path = runs_dir / f"{record.run_id}.json"
    atomic_write_text(path, json.dumps(record.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def read_record(path: Path) -> RunRecord:
    try:
        return RunRecord.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"run record {path} is unreadable ({exc}); delete it to rerun that cell") from None


def load_records(runs_dir: Path) -> list[RunRecord]:
    return [read_record(p) for p in sorted(Path(runs_dir).glob("*.json"))]


def has_record(runs_dir: Path, run_id: str) -> bool:
    path = runs_dir / f"{run_id}.json"
    if not path.exists():
        return False
    try:
        return read_record(path).status in FINAL
    except CheckpointError:
        return False


def unmeasured_reason(rec: RunRecord) -> str:
    """Why a record holds no measurement: the error a failed cell ended with, or why the method does not apply."""
    return str(rec.details.get("error") or rec.details.get("not_applicable") or "unknown error")
