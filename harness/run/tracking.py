"""Weights & Biases logging: offline by default (no key, no network), online on request."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slimbench.core.errors import ConfigError

MODES = ("offline", "online", "disabled")


class Tracker:
    """Opens one W&B run per cell (and per baseline training), all grouped by suite."""

    def __init__(self, mode: str, root: Path, project: str, group: str):
        if mode not in MODES:
            raise ConfigError(f"unknown W&B mode {mode!r}; valid modes: {', '.join(MODES)}")
        if mode == "online" and not _has_wandb_key():
            raise ConfigError(
                "W&B online mode needs an API key: run `wandb login` or set WANDB_API_KEY, "
                "or use `--wandb offline` (the default) and `wandb sync` the runs later"
            )
        self.mode, self.root, self.project, self.group = mode, Path(root), project, group
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")

    @contextlib.contextmanager
    def run(self, name: str, job_type: str, config: dict[str, Any], tags: list[str]) -> Iterator[Any]:
        if self.mode == "disabled":  # no W&B at all: works where wandb is not installed
            yield _NullRun()
            return
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)   # only when a run is really logged (not on --dry-run)
        run = wandb.init(
            project=self.project, group=self.group, name=name, job_type=job_type, config=config,
            tags=[t[:64] for t in tags], dir=str(self.root), mode=self.mode, reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        try:
            yield run
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()

    def lightning_logger(self, run: Any) -> Any:
        """A Lightning logger writing into an open run, so fine-tuning curves land in the cell's run."""
        if self.mode == "disabled":
            return False
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(experiment=run)

    @staticmethod
    def describe(run: Any) -> dict[str, Any]:
        if run is None or getattr(run, "disabled", False) or not getattr(run, "dir", None):
            return {"mode": "disabled"}
        return {"mode": run.settings.mode, "id": run.id, "path": run.path if run.settings.mode == "online" else None,
                "dir": str(Path(run.dir).parent)}


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def read_offline_summary(run_dir: Path) -> dict[str, Any]:
    """The summary an offline run logged, read back from its `.wandb` file.

    wandb exposes no reader for offline run files, so we walk their record log (LevelDB log framing:
    32 KiB blocks of `crc32c:u32, length:u16, type:u8` chunks) and decode wandb's own protobuf records.
    """
    import json
    import struct

    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {run_dir}")
    data = files[0].read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{files[0]} is not a W&B run file")
    summary: dict[str, Any] = {}
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a header: skip to the next block
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # a torn tail: wandb's writer is still appending this chunk
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind not in (1, 4):
            continue
        record = pb.Record()
        try:
            record.ParseFromString(pending)
        except DecodeError:
            if pos + 7 <= len(data):  # corruption before the tail is a broken file, not a write in progress
                raise
            break
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


class _NullRun:
    """What a disabled tracker hands out: accepts logs and summaries and keeps nothing."""

    disabled, dir = True, None

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}

    def log(self, _metrics: dict[str, Any]) -> None:
        pass
