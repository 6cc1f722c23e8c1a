"""Which cells a `--shard I/N` process owns: a slice of the suite by run_id alone, so N processes or SLURM array
tasks share one results folder and a slice never changes on resume or reorder."""

from __future__ import annotations

from slimbench.core.errors import ConfigError


def in_shard(run_id: str, index: int, count: int) -> bool:
    """Shard `index` of `count` owns a cell by its run_id alone, so a slice never changes on resume or reorder."""
    return int(run_id, 16) % count == index


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard 2/8` → (2, 8); SLURM's `$SLURM_ARRAY_TASK_ID/$N` fits it directly."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need N ≥ 1 and 0 ≤ I < N")
    return index, count
