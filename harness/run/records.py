"""Run records: one JSON file per cell, written atomically; the only source of tables and plots."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from slimbench.core.errors import CheckpointError

RECORD_VERSION = 1


@dataclass
class RunRecord:
    run_id: str
    suite: str
    status: str
    task: str
    model: str
    method: str
    family: str
    seed: int
    config: dict[str, Any]                 # the resolved cell config the run_id hashes
    metrics: dict[str, Any]                # slimbench.harness.measure.quality.Metrics of the optimised model
    reference: dict[str, Any]              # the trained baseline, measured in the same process
    compression: dict[str, Any]            # label, compute, storage formats, requested vs achieved
    details: dict[str, Any] = field(default_factory=dict)
    baseline_training: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    plugins: list[dict[str, Any]] = field(default_factory=list)   # outside code the cell ran: version or sha256
    git: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    wandb: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    record_version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"run record {path} is unreadable ({exc}); delete it to rerun that cell") from None


def load_records(runs_dir: Path) -> list[RunRecord]:
    return [read_record(p) for p in sorted(Path(runs_dir).glob("*.json"))]


def has_record(runs_dir: Path, run_id: str) -> bool:
    path = runs_dir / f"{run_id}.json"
    if not path.exists():
        return False
    try:
        return read_record(path).status == "ok"
    except CheckpointError:
        return False
