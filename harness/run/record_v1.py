"""Version-1 run records, read into today's layout: committed records stay readable without being rewritten.

Version 1 stored the compression evidence twice (the labels, the verdict and the claim beside `compression.evidence`,
which held them again), wrote a failed cell's missing parts as `{}`, and kept the provenance at the top level.
"""

from __future__ import annotations

from typing import Any

PROVENANCE_KEYS = ("versions", "plugins", "git", "created")


def _part(value: Any) -> Any:
    """A part version 1 wrote as `{}` when the cell never got that far."""
    return value if value else None


def _compression(data: dict[str, Any]) -> dict[str, Any] | None:
    if not data:
        return None
    evidence = data["evidence"]
    return {"baseline": data["label"] == "reference", "storage_formats": data["storage_formats"],
            "evidence": {"storage": evidence["storage"], "compute": evidence["compute"], "claimed": evidence["claimed"],
                         "disagreements": evidence["disagreements"]}}


def upgrade(data: dict[str, Any], version: int) -> dict[str, Any]:
    """A version-1 record (as read from JSON) in the layout of `version`."""
    out = {k: v for k, v in data.items() if k not in PROVENANCE_KEYS}
    out.update(metrics=_part(data.get("metrics")), reference=_part(data.get("reference")),
               compression=_compression(data.get("compression") or {}),
               baseline_training=_part(data.get("baseline_training")), artifact=_part(data.get("artifact")),
               wandb=_part(data.get("wandb")), provenance={k: data[k] for k in PROVENANCE_KEYS if k in data},
               record_version=version)
    return out
