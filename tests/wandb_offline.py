"""Reading back what an offline Weights & Biases run logged: the tests check the harness's logs with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        record = pb.Record()   # type: ignore[attr-defined]  # wandb's protobuf classes are generated: no stubs
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
