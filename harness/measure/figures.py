"""What a record keeps of a measurement: the deployed model's figures and its reference's, as typed data.

Plain data without torch, so reports and comparisons read records without loading the model stack; quality.py
and the runner fill them.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimbench.harness.measure.explanation_data import Explanations


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Per-example right/wrong flags from the base64 bits `quality.pack_bits` wrote."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


@dataclass
class SpeedupBand:
    ratio: float          # median over interleaved rounds of reference latency ÷ model latency
    low: float            # the lowest round's ratio
    high: float           # the highest round's ratio
    rounds: int           # interleaved timing rounds behind the band
    deployed: bool        # the runtime the model is deployed in (the others are shown beside it)


@dataclass
class Robustness:
    """Per-class accuracy, which test examples are right, and accuracy on each corrupted copy of the test split:
    what a report needs to pair a model with its baseline example by example without keeping either model."""

    classes: list[str]
    class_counts: list[int]                       # test examples per class
    per_class_accuracy: list[float | None]        # None: a class without test examples
    test_correct: str                             # right/wrong per test example, base64 bits (`unpack_bits`)
    test_examples: int
    # the rest only for a task that declares corruptions
    corrupted_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)   # corruption -> severity -> acc
    corruption_levels: dict[str, list[float]] = field(default_factory=dict)        # corruption -> its strengths
    corrupted_examples: int | None = None          # the stratified test subset every corrupted copy is made from
    corruption_seed: int | None = None
    clean_subset_accuracy: float | None = None     # clean accuracy on that subset

    def correct_flags(self) -> np.ndarray:
        return unpack_bits(self.test_correct, self.test_examples)

    def mean_corrupted(self) -> float | None:
        """Mean accuracy over every corruption × severity (None: the task declares none)."""
        values = [v for per in self.corrupted_accuracy.values() for v in per.values()]
        return round(sum(values) / len(values), 6) if values else None


@dataclass
class RuntimeQuality:
    """The deployed model evaluated in one more runtime: what that runtime does to its accuracy, its own file."""

    accuracy: float | None = None
    macro_f1: float | None = None
    agreement: float | None = None     # share of test predictions equal to those of the runtime it is deployed in
    file_bytes: int | None = None      # the file this runtime loads (ONNX, OpenVINO IR, .pte); None: none of its own
    ran: dict[str, Any] = field(default_factory=dict)   # what the runtime says ran (e.g. OpenVINO's precision)
    unavailable: str | None = None     # why the model cannot run there (then nothing else is set)


# Metrics fields added after records exist: left out of a record when not measured, so older records (and records
# of suites that do not ask for them) keep their exact bytes
OMITTED_WHEN_EMPTY = ("by_runtime", "explanations")


def without_unmeasured(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not (k in OMITTED_WHEN_EMPTY and v in (None, {}, []))}


@dataclass
class Metrics:
    """The deployed (optimised) model, measured by the harness."""

    accuracy: float
    macro_f1: float
    params: int
    nonzero_params: int
    stored_bytes: int                # the packed (compressed) representation's tensor bytes
    gzip_bytes: int                  # gzip of the serialized artifact file
    file_bytes: int
    macs: int
    latency_b1_ms: float
    latency_bn_ms: float
    latency_batch: int
    peak_memory_bytes: int | None
    eval_seconds: float
    runtime: str = "eager"           # where the model is deployed; `latency_b*_ms` are that runtime's
    # every runtime's timings as deploy's latency code returns them: per example ("b1_ms", "b1_rounds_ms", ...) or
    # {"unavailable": reason}; the keys follow the examples timed, so this stays a mapping
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    speedup: dict[str, dict[str, SpeedupBand]] = field(default_factory=dict)   # per runtime, then example
    mean_corrupted_accuracy: float | None = None    # over every corruption × severity of the task (None: none declared)
    robustness: Robustness | None = None            # None: not measured (the suite's `measure.robustness` is off)
    latency_kernels: dict[str, str] = field(default_factory=dict)      # which kernels and process timed `latency`
    # accuracy and file size in each runtime the suite lists (`measure.runtime_accuracy`); empty: not measured
    by_runtime: dict[str, RuntimeQuality] = field(default_factory=dict)
    explanations: Explanations | None = None        # None: not measured (the suite's `measure.explanations` is off)

    def band(self, example: str) -> SpeedupBand | None:
        """The deployed runtime's speedup band for `example` ("b1", "bn"), None when it was not timed."""
        return self.speedup.get(self.runtime, {}).get(example)

    def to_dict(self) -> dict[str, Any]:
        return without_unmeasured(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        speedup = {runtime: {example: SpeedupBand(**band) for example, band in by_example.items()}
                   for runtime, by_example in data.get("speedup", {}).items()}
        robust = data.get("robustness")
        by_runtime = {runtime: RuntimeQuality(**q) for runtime, q in data.get("by_runtime", {}).items()}
        explained = data.get("explanations")
        return cls(**{**data, "speedup": speedup, "robustness": Robustness(**robust) if robust else None,
                      "by_runtime": by_runtime,
                      "explanations": Explanations.from_dict(explained) if explained else None})


@dataclass
class Reference:
    """The trained baseline the cell started from, measured in the same process and runtime as the model."""

    accuracy: float                  # test accuracy of the baseline (from its training, same seed and budget)
    macro_f1: float
    params: int
    nonzero_params: int
    gzip_bytes: int
    file_bytes: int
    macs: int
    latency_b1_ms: float             # in the model's runtime
    latency_bn_ms: float
    runtime: str
    stored_bytes: int                # like for like: the fp32 reference in the model's stored form
    stored_form: str                 # "state dict", "onnx fp32, BatchNorm folded" or "executorch fp32 .pte (XNNPACK)"
    state_dict_stored_bytes: int     # the raw state dict's packed size beside it
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)   # every runtime's timings, as `Metrics.latency`
