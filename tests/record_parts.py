"""Typed record parts and leaderboard rows for tests that build records by hand: every field a measured record has,
with plain values a test overrides by name."""

from __future__ import annotations

from typing import Any

from slimbench.harness.measure.evidence_data import Claimed, Compression, ComputeEvidence, Evidence, StorageEvidence
from slimbench.harness.measure.figures import Metrics, Reference, SpeedupBand
from slimbench.harness.report.rows import LeaderboardRow


def band(ratio: float = 1.0, low: float = 0.95, high: float = 1.05) -> SpeedupBand:
    return SpeedupBand(ratio=ratio, low=low, high=high, rounds=3, deployed=True)


def metrics(**figures: Any) -> Metrics:
    base: dict[str, Any] = dict(accuracy=0.9, macro_f1=0.9, params=100, nonzero_params=100, stored_bytes=1000,
                                gzip_bytes=1000, file_bytes=1000, macs=1000, latency_b1_ms=10.0, latency_bn_ms=100.0,
                                latency_batch=64, peak_memory_bytes=None, eval_seconds=0.1, runtime="eager",
                                speedup={"eager": {"b1": band(), "bn": band()}})
    return Metrics(**{**base, **figures})


def reference(**figures: Any) -> Reference:
    base: dict[str, Any] = dict(accuracy=0.9, macro_f1=0.9, params=100, nonzero_params=100, gzip_bytes=1000,
                                file_bytes=1000, macs=1000, latency_b1_ms=10.0, latency_bn_ms=100.0, runtime="eager",
                                stored_bytes=1000, stored_form="state dict", state_dict_stored_bytes=1000)
    return Reference(**{**base, **figures})


def compression(storage: str = "dense fp32", compute: str = "dense fp32", baseline: bool = False,
                requested: dict[str, Any] | None = None, disagreements: list[str] | None = None) -> Compression:
    evidence = Evidence(StorageEvidence(storage, 100, 0.0, 32.0, 100, {}, {}, 0),
                        ComputeEvidence(compute, {"float32": 1}, 1000, 1000),
                        Claimed("dense", requested or {}, {}), disagreements or [])
    return Compression(baseline=baseline, storage_formats={"dense": 1}, evidence=evidence)


def leaderboard_row(**columns: Any) -> LeaderboardRow:
    base: dict[str, Any] = dict(
        task="t", model="m", method="baseline", params_json="{}", seeds="0", accuracy=0.9, accuracy_std=0.0,
        macro_f1=0.9, params=100, nonzero_params=100, stored_bytes=1000, gzip_bytes=1000, compression_x=1.0,
        macs=1000, latency_b1_ms=1.0, latency_bn_ms=10.0, speedup_b1_x=1.0, label="reference", requested="{}",
        achieved="{}", run_ids="r0", runtime="eager", speedup_bn_x=1.0, delta_accuracy=0.0, delta_accuracy_std=0.0,
        delta_significant=False, storage="dense fp32", compute="dense fp32", claim_verified=True,
        speedup_b1_low=None, speedup_b1_high=None, speedup_bn_low=None, speedup_bn_high=None, compression_raw_x=1.0,
        provenance="commit abc", family="baseline", params_given="{}", latency_batch=64)
    return LeaderboardRow(**{**base, **columns})
