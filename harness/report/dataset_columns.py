"""The exported dataset's columns, each once: its name, type, one-line meaning and where a record keeps it.

`slimbench export` builds the table, its Arrow schema and the dataset card's column list from this one spec, so the
three never disagree. A `Family` is a set of columns named by what the records hold (a runtime, a corruption, a
package): one column per key some record has.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slimbench.harness.run.records import RunRecord, unmeasured_reason

STR, INT, FLOAT, BOOL = "string", "int64", "float64", "bool"

Read = Callable[[RunRecord], Any]


@dataclass(frozen=True)
class Column:
    name: str
    kind: str                        # STR, INT, FLOAT or BOOL; a STR column holds any other value as JSON text
    meaning: str
    source: str | Read               # a dotted attribute path of the record (None where a part is None), or a reader

    def read(self, record: RunRecord) -> Any:
        if callable(self.source):
            return self.source(record)
        value: Any = record
        for attr in self.source.split("."):
            value = None if value is None else getattr(value, attr)
        return value


@dataclass(frozen=True)
class Family:
    pattern: str                     # the column name, with a field for each part of the key ("latency.{runtime}")
    kind: str | None                 # None: from the values (see `infer_kind`)
    meaning: str                     # with the same fields
    read: Callable[[RunRecord], dict[tuple[str, ...], Any]]   # key parts (in the pattern's order) -> value

    @property
    def fields(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.pattern) if name]

    def name(self, key: tuple[str, ...]) -> str:
        return self.pattern.format(**dict(zip(self.fields, key)))

    def meaning_of(self, key: tuple[str, ...]) -> str:
        return self.meaning.format(**dict(zip(self.fields, key)))


def to_json(value: Any) -> str:
    """JSON text with sorted keys: the same value always reads the same."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def infer_kind(values: list[Any]) -> str | None:
    """A family column's type from its values; None (JSON text) where they mix kinds."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return BOOL
    if any(isinstance(v, bool) for v in present):
        return None
    if all(isinstance(v, int) for v in present):
        return INT
    if all(isinstance(v, int | float) for v in present):
        return FLOAT
    return STR if all(isinstance(v, str) for v in present) else None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _timings(part: str) -> Callable[[RunRecord], dict[tuple[str, ...], Any]]:
    def read(record: RunRecord) -> dict[tuple[str, ...], Any]:
        figures = getattr(record, part)
        latency = figures.latency if figures is not None else {}
        return {(runtime, example): timed.get(f"{example}_ms") for runtime, timed in latency.items()
                for example in ("b1", "bn") if f"{example}_ms" in timed}
    return read


def _unavailable(record: RunRecord) -> dict[tuple[str, ...], Any]:
    latency = record.metrics.latency if record.metrics else {}
    return {(runtime,): timed["unavailable"] for runtime, timed in latency.items() if "unavailable" in timed}


def _in_runtime(field: str) -> Callable[[RunRecord], dict[tuple[str, ...], Any]]:
    def read(record: RunRecord) -> dict[tuple[str, ...], Any]:
        by_runtime = record.metrics.by_runtime if record.metrics else {}
        return {(runtime,): value for runtime, quality in by_runtime.items()
                if (value := getattr(quality, field)) is not None}
    return read


def _band(example: str, stat: str) -> Read:
    def read(record: RunRecord) -> float | None:
        band = record.metrics.band(example) if record.metrics else None
        return None if band is None else getattr(band, stat)
    return read


def _speedups(record: RunRecord) -> dict[tuple[str, ...], Any]:
    speedup = record.metrics.speedup if record.metrics else {}
    return {(runtime, example, stat): getattr(band, stat) for runtime, bands in speedup.items()
            for example, band in bands.items() for stat in ("ratio", "low", "high")}


def _corrupted(record: RunRecord) -> dict[tuple[str, ...], Any]:
    robust = record.metrics.robustness if record.metrics else None
    per = robust.corrupted_accuracy if robust else {}
    return {(corruption, severity): acc for corruption, levels in per.items() for severity, acc in levels.items()}


def _levels(record: RunRecord) -> dict[tuple[str, ...], Any]:
    robust = record.metrics.robustness if record.metrics else None
    per = robust.corruption_levels if robust else {}
    return {(corruption, str(i)): level for corruption, levels in per.items() for i, level in enumerate(levels, 1)}


def _per_class(attr: str) -> Read:
    def read(record: RunRecord) -> dict[str, Any] | None:
        robust = record.metrics.robustness if record.metrics else None
        return None if robust is None else dict(zip(robust.classes, getattr(robust, attr)))
    return read


def _evidence(part: str, attr: str) -> Read:
    def read(record: RunRecord) -> Any:
        return None if record.compression is None else getattr(getattr(record.compression.evidence, part), attr)
    return read


def _compression(view: str) -> Read:
    return lambda r: None if r.compression is None else getattr(r.compression, view)


_REFERENCE = [("accuracy", FLOAT, "its test accuracy"), ("macro_f1", FLOAT, "its test macro-F1"),
              ("params", INT, "its parameters"), ("nonzero_params", INT, "its non-zero parameters"),
              ("stored_bytes", INT, "its stored bytes, like for like: the fp32 model in the model's stored form"),
              ("stored_form", STR, "which form reference.stored_bytes counts"),
              ("state_dict_stored_bytes", INT, "its raw state dict's packed size"),
              ("gzip_bytes", INT, "its serialized file after gzip"), ("file_bytes", INT, "its serialized file"),
              ("macs", INT, "its multiply-accumulates of one example"), ("runtime", STR, "the runtime it was timed in"),
              ("latency_b1_ms", FLOAT, "its batch-1 latency in the model's runtime (ms)"),
              ("latency_bn_ms", FLOAT, "its batch-N latency in the model's runtime (ms)")]

COLUMNS: tuple[Column | Family, ...] = (
    # the cell
    Column("suite", STR, "the suite the record belongs to", "suite"),
    Column("run_id", STR, "the cell's id (a hash of its resolved config and code versions); its record's file name",
           "run_id"),
    Column("status", STR, "ok; failed: the cell raised and has no figures; n/a: its method cannot apply to its model",
           "status"),
    Column("error", STR, "the error a failed cell ended with, or why an n/a cell's method cannot apply to its model",
           lambda r: None if r.status == "ok" else unmeasured_reason(r)),
    Column("task", STR, "the registered task (dataset)", "task"),
    Column("model", STR, "the registered model architecture", "model"),
    Column("method", STR, "the registered compression method (baseline: the trained model itself)", "method"),
    Column("family", STR, "the method's family", "family"),
    Column("seed", INT, "the seed of training, calibration and fine-tuning", "seed"),
    Column("params_json", STR, "the method's full parameters (JSON; the scalar ones also as `param.<name>`)",
           lambda r: r.config["method"]["params"]),
    Family("param.{name}", None, "the method parameter `{name}`",
           lambda r: {(k,): v for k, v in r.config["method"]["params"].items() if _scalar(v)}),
    Column("params_given_json", STR, "the parameters the suite file set (JSON)",
           lambda r: r.details.get("params_given", {})),
    Column("config_json", STR, "the resolved cell config the run_id hashes: task, model, method, training, "
                               "measurement and code versions (JSON)", lambda r: r.config),
    # the deployed model
    Column("accuracy", FLOAT, "top-1 accuracy on the test split, of the model as deployed", "metrics.accuracy"),
    Column("macro_f1", FLOAT, "macro-averaged F1 on the test split", "metrics.macro_f1"),
    Column("params", INT, "parameter elements of the deployed model", "metrics.params"),
    Column("nonzero_params", INT, "the non-zero ones among them", "metrics.nonzero_params"),
    Column("stored_bytes", INT, "bytes of the weight tensors in the packed stored form", "metrics.stored_bytes"),
    Column("gzip_bytes", INT, "the serialized artifact file after gzip", "metrics.gzip_bytes"),
    Column("file_bytes", INT, "the serialized artifact file", "metrics.file_bytes"),
    Column("macs", INT, "multiply-accumulates of one example through the deployed graph", "metrics.macs"),
    Column("runtime", STR, "where the model is deployed and timed", "metrics.runtime"),
    Column("latency_b1_ms", FLOAT, "batch-1 latency in the deployed runtime (ms)", "metrics.latency_b1_ms"),
    Column("latency_bn_ms", FLOAT, "batch-N latency in the deployed runtime (ms)", "metrics.latency_bn_ms"),
    Column("latency_batch", INT, "the N of batch-N latency", "metrics.latency_batch"),
    Family("latency.{runtime}.{example}_ms", FLOAT, "{example} latency in {runtime} (ms)", _timings("metrics")),
    Family("latency.{runtime}.unavailable", STR, "why {runtime} was not timed", _unavailable),
    Column("speedup_b1_x", FLOAT, "reference ÷ model batch-1 latency in the deployed runtime, median over rounds",
           _band("b1", "ratio")),
    Column("speedup_b1_low", FLOAT, "the lowest interleaved round's batch-1 ratio", _band("b1", "low")),
    Column("speedup_b1_high", FLOAT, "the highest interleaved round's batch-1 ratio", _band("b1", "high")),
    Column("speedup_bn_x", FLOAT, "reference ÷ model batch-N latency in the deployed runtime, median over rounds",
           _band("bn", "ratio")),
    Column("speedup_bn_low", FLOAT, "the lowest interleaved round's batch-N ratio", _band("bn", "low")),
    Column("speedup_bn_high", FLOAT, "the highest interleaved round's batch-N ratio", _band("bn", "high")),
    Family("speedup.{runtime}.{example}.{stat}", FLOAT, "reference ÷ model {example} latency in {runtime}: {stat}",
           _speedups),
    Family("latency_kernels.{key}", STR, "how latency was timed: {key}",
           lambda r: {(k,): v for k, v in r.metrics.latency_kernels.items()} if r.metrics else {}),
    # the model in each runtime its suite lists (measure.runtime_accuracy)
    Family("in_runtime.{runtime}.accuracy", FLOAT, "test accuracy evaluated in {runtime}", _in_runtime("accuracy")),
    Family("in_runtime.{runtime}.agreement", FLOAT, "share of test predictions in {runtime} equal to the deployed "
           "runtime's", _in_runtime("agreement")),
    Family("in_runtime.{runtime}.file_bytes", INT, "bytes of the file {runtime} loads the model from",
           _in_runtime("file_bytes")),
    Family("in_runtime.{runtime}.unavailable", STR, "why the model cannot run in {runtime}",
           _in_runtime("unavailable")),
    Column("peak_memory_bytes", INT, "weights plus the largest live activations of one eager forward",
           "metrics.peak_memory_bytes"),
    Column("eval_seconds", FLOAT, "seconds to deploy and evaluate the model on the test split", "metrics.eval_seconds"),
    # robustness
    Column("mean_corrupted_accuracy", FLOAT, "accuracy over every corruption × severity the task declares",
           "metrics.mean_corrupted_accuracy"),
    Family("corrupted.{corruption}.{severity}", FLOAT, "accuracy on the {corruption} copy at severity {severity}",
           _corrupted),
    Family("corruption_level.{corruption}.{severity}", FLOAT, "the strength of {corruption} at severity {severity}",
           _levels),
    Column("clean_subset_accuracy", FLOAT, "clean accuracy on the test subset the corrupted copies are made from",
           "metrics.robustness.clean_subset_accuracy"),
    Column("corrupted_examples", INT, "the size of that subset", "metrics.robustness.corrupted_examples"),
    Column("corruption_seed", INT, "the seed that drew the subset and the noise", "metrics.robustness.corruption_seed"),
    Column("per_class_accuracy_json", STR, "clean accuracy per class (JSON)", _per_class("per_class_accuracy")),
    Column("class_counts_json", STR, "test examples per class (JSON)", _per_class("class_counts")),
    Column("test_examples", INT, "examples in the test split", "metrics.robustness.test_examples"),
    Column("test_correct", STR, "right/wrong per test example, base64 bits in test order",
           "metrics.robustness.test_correct"),
    # the reference: the trained baseline, measured in the same process and runtime
    *(Column(f"reference.{name}", kind, f"reference: {meaning}", f"reference.{name}")
      for name, kind, meaning in _REFERENCE),
    Family("reference.latency.{runtime}.{example}_ms", FLOAT, "reference: {example} latency in {runtime} (ms)",
           _timings("reference")),
    # the compression, as measured
    Column("label", STR, "the compression label: storage · compute, or reference for the baseline",
           _compression("label")),
    Column("storage", STR, "what the stored file holds for most weights (measured)", _compression("storage")),
    Column("compute", STR, "what the deployed runtime's kernels execute (measured)", _compression("compute")),
    Column("is_baseline", BOOL, "the trained baseline itself", _compression("baseline")),
    Column("claim_verified", BOOL, "no claim of the method is contradicted by the measurement",
           _compression("verified")),
    Column("disagreements_json", STR, "each contradicted claim in words (JSON list)", _compression("disagreements")),
    Column("claimed_compute", STR, "the compute the method claims", _evidence("claimed", "compute")),
    Column("requested_json", STR, "what the method was asked for (JSON)", _evidence("claimed", "requested")),
    Column("claimed_achieved_json", STR, "what the method says it achieved (JSON)", _evidence("claimed", "achieved")),
    Column("evidence.sparsity", FLOAT, "zeros among the stored weight elements", _evidence("storage", "sparsity")),
    Column("evidence.bits_per_weight", FLOAT, "stored bits of the weight tensors per weight element",
           _evidence("storage", "bits_per_weight")),
    Column("evidence.max_distinct_values", INT, "the most distinct values in one weight tensor",
           _evidence("storage", "max_distinct_values")),
    Column("evidence.weights", INT, "weight elements stored (tied tensors once)", _evidence("storage", "weights")),
    Column("evidence.tied_tensors", INT, "tensors stored as an alias of another", _evidence("storage", "tied_tensors")),
    Column("evidence.encodings_json", STR, "weight elements per encoding (JSON)", _evidence("storage", "encodings")),
    Column("evidence.kernels_json", STR, "compute kernels by arithmetic (JSON)", _evidence("compute", "kernels")),
    Column("evidence.storage_formats_json", STR, "stored tensors per format of the packed form (JSON)",
           _compression("storage_formats")),
    # the trained baseline, the artifact, the cell's time
    Column("baseline.epochs", INT, "epochs the baseline trained", "baseline_training.epochs"),
    Column("baseline.selected_epoch", INT, "the epoch whose weights were kept (best validation accuracy)",
           "baseline_training.selected_epoch"),
    Column("baseline.val_accuracy", FLOAT, "the baseline's validation accuracy", "baseline_training.val_acc"),
    Column("baseline.train_seconds", FLOAT, "seconds the baseline trained", "baseline_training.train_seconds"),
    Column("artifact.format", STR, "the saved model's format", "artifact.format"),
    Column("artifact.bytes", INT, "the saved model's size", "artifact.bytes"),
    Column("artifact.sha256", STR, "the saved model's sha256", "artifact.sha256"),
    Column("wall_seconds", FLOAT, "the cell's wall time", lambda r: r.wall_seconds.get("total")),
    # provenance
    Column("git.commit", STR, "the commit that produced the record", "provenance.git.commit"),
    Column("git.dirty", BOOL, "the source tree had uncommitted changes", "provenance.git.dirty"),
    Column("created", STR, "when the record was written (UTC, ISO 8601)", "provenance.created"),
    Family("version.{package}", STR, "the version of {package}",
           lambda r: {(k,): v for k, v in r.provenance.versions.items()}),
    Column("plugins_json", STR, "outside code the cell ran and its source (JSON)", "provenance.plugins"),
    # hardware
    Column("hardware.cpu", STR, "the CPU model", "hardware.cpu"),
    Column("hardware.machine", STR, "the CPU architecture", "hardware.machine"),
    Column("hardware.system", STR, "the operating system", "hardware.system"),
    Column("hardware.logical_cpus", INT, "logical CPUs", "hardware.logical_cpus"),
    Column("hardware.memory_bytes", INT, "the machine's memory", "hardware.memory_bytes"),
    Column("hardware.torch_threads", INT, "torch intra-op threads", "hardware.torch_threads"),
    Column("hardware.instruction_sets", STR, "the CPU's instruction sets (space-separated)",
           lambda r: " ".join(r.hardware.instruction_sets) or None),
    Column("hardware.torch_cpu_capability", STR, "the CPU kernels torch dispatched to",
           "hardware.torch_cpu_capability"),
    Column("hardware.cuda", STR, "the GPU's name", "hardware.cuda"),
    Column("hardware.kernels", STR, "the kernels every figure but latency used (pinned-avx2 or native)",
           "hardware.kernels.numerics"),
    Column("hardware.kernels_reason", STR, "why those kernels", "hardware.kernels.reason"),
    Family("kernel_pin.{variable}", STR, "the environment variable {variable} as the kernel pins set it",
           lambda r: {(k,): v for k, v in r.hardware.kernels.pins.items()} if r.hardware.kernels else {}),
)
