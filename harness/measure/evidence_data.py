"""The measured labels as data: what a record keeps of the evidence (harness/measure/evidence.py measures it).

Everything a reader shows (the labels, whether the claims held, the measured counterparts of the claims) is
derived from the one copy kept here, so a record never holds two versions of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StorageEvidence:
    label: str
    weights: int                      # weight elements stored (tied tensors once)
    sparsity: float                   # zeros among them
    bits_per_weight: float            # stored bits of the weight tensors / weight elements
    max_distinct_values: int          # the largest number of distinct values in one weight tensor
    distinct_values: dict[str, int]   # per weight tensor
    encodings: dict[str, int]         # weight elements per encoding ("dense float32", "codebook", ...)
    tied_tensors: int                 # tensors stored as an alias of another


@dataclass
class ComputeEvidence:
    label: str
    kernels: dict[str, int]           # compute kernels by arithmetic ("float32": 12, "int8": 30, ...)
    macs: int
    reference_macs: int


@dataclass
class Claimed:
    """What the method said it did; kept as said, checked against the measurement."""

    compute: str                      # "dense", "simulated", "physical", ...
    # the method's own parameters and figures: each method names its own, so these stay mappings
    requested: dict[str, Any] = field(default_factory=dict)
    achieved: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evidence:
    storage: StorageEvidence
    compute: ComputeEvidence
    claimed: Claimed
    disagreements: list[str] = field(default_factory=list)   # one line per claim the measurement contradicts

    @property
    def verified(self) -> bool:
        return not self.disagreements

    @property
    def label(self) -> str:
        return f"storage {self.storage.label} · compute {self.compute.label}"

    def measured(self) -> dict[str, Any]:
        """The measured counterparts of what methods claim, under the names methods use."""
        return {"sparsity": round(self.storage.sparsity, 6), "weight_bits": round(self.storage.bits_per_weight, 3),
                "max_distinct_values": self.storage.max_distinct_values, "macs": self.compute.macs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(StorageEvidence(**data["storage"]), ComputeEvidence(**data["compute"]), Claimed(**data["claimed"]),
                   list(data.get("disagreements", [])))


@dataclass
class Compression:
    """A cell's compression as measured: the evidence once, and the views of it the tables read."""

    baseline: bool                    # the trained baseline itself: labelled "reference", not by its evidence
    storage_formats: dict[str, int]   # stored tensors per format of the packed form
    evidence: Evidence

    @property
    def label(self) -> str:
        return "reference" if self.baseline else self.evidence.label

    @property
    def storage(self) -> str:
        return self.evidence.storage.label

    @property
    def compute(self) -> str:
        return self.evidence.compute.label

    @property
    def verified(self) -> bool:
        return self.evidence.verified

    @property
    def disagreements(self) -> list[str]:
        return self.evidence.disagreements

    @property
    def claimed(self) -> Claimed:
        return self.evidence.claimed

    @property
    def requested(self) -> dict[str, Any]:
        return self.evidence.claimed.requested

    @property
    def achieved(self) -> dict[str, Any]:
        return self.evidence.measured()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Compression:
        return cls(bool(data["baseline"]), dict(data["storage_formats"]), Evidence.from_dict(data["evidence"]))
