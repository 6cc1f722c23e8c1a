"""The parts of a run record that say where it came from: code, packages, machine, trained baseline, artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimbench.core.kernels import KernelState


@dataclass
class GitState:
    commit: str | None = None        # None: not run from a git checkout
    dirty: bool | None = None        # uncommitted changes when the record was made (reports flag them)
    changed: list[str] = field(default_factory=list)   # the first changed paths, for a dirty tree
    source: str = ""                 # what names the code without git ("slimbench 0.1.0 (installed)")


@dataclass
class Provenance:
    """The code and packages that produced a record, and when."""

    versions: dict[str, str] = field(default_factory=dict)        # package -> version
    # outside code the cell ran, as the registry describes its source (kind, origin, version or sha256)
    plugins: list[dict[str, Any]] = field(default_factory=list)
    git: GitState = field(default_factory=GitState)
    created: str = ""                # UTC, ISO 8601

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        return cls(dict(data.get("versions", {})), list(data.get("plugins", [])),
                   GitState(**data.get("git", {})), data.get("created", ""))


@dataclass
class TrainingDevices:
    """How Lightning spread the cell's training (--devices/--strategy/--num-nodes): not in the run_id."""

    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1


@dataclass
class Hardware:
    """The machine a record was measured on; None where it could not be read."""

    machine: str | None = None
    instruction_sets: list[str] = field(default_factory=list)
    torch_cpu_capability: str | None = None
    kernels: KernelState | None = None     # the kernels every figure but latency used (None: before pinning)
    system: str | None = None
    cpu: str | None = None
    logical_cpus: int | None = None
    memory_bytes: int | None = None
    torch_threads: int | None = None
    cuda: str | None = None                # the GPU's name, None without one
    training_devices: TrainingDevices | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        kernels, devices = data.get("kernels"), data.get("training_devices")
        return cls(**{**data, "kernels": KernelState(**kernels) if kernels else None,
                      "training_devices": TrainingDevices(**devices) if devices else None})


@dataclass
class BaselineTraining:
    """The cached trained baseline a cell started from (the cache's own description of it)."""

    # the task, model and training configs it was trained with, as the cell config holds them
    task: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    seed: int
    selected_epoch: int              # the epoch whose weights were kept (best validation accuracy)
    epochs: int
    val_acc: float
    test_accuracy: float
    test_macro_f1: float
    train_seconds: float
    checkpoint: str                  # the cache file
    sha256: str
    # wall seconds of each training epoch, validation left out, and the batches each epoch draws; None: trained
    # before the cache kept them
    epoch_seconds: list[float] | None = None
    train_batches: int | None = None

    def seconds_per_example(self) -> float | None:
        """Training wall seconds per example over every epoch; None where the epochs were not timed."""
        if not self.epoch_seconds or not self.train_batches:
            return None
        return sum(self.epoch_seconds) / (self.train_batches * int(self.train["batch_size"]) * len(self.epoch_seconds))

    @staticmethod
    def without_untimed(data: dict[str, Any]) -> dict[str, Any]:
        """The part as a record writes it: the timings left out while unknown, so older records keep their bytes."""
        return {k: v for k, v in data.items() if not (k in ("epoch_seconds", "train_batches") and v is None)}


@dataclass
class Fit:
    """One training run inside a cell (a fine-tune, a distilled student trained from scratch), timed per epoch on the
    cell's threads: what the method's model costs to train, beside its baseline's `BaselineTraining`."""

    epoch_seconds: list[float]       # wall seconds of each training epoch, validation left out
    train_batches: int               # batches per epoch
    batch_size: int
    val_acc: list[float]             # validation accuracy after each epoch (when it reached the baseline's)
    selected_epoch: int              # the epoch whose weights were kept
    seconds: float                   # the whole fit, validation included


def fits_seconds_per_example(fits: list[Fit]) -> float | None:
    """A cell's training wall seconds per example over all its fits and epochs; None where nothing was trained."""
    examples = sum(f.train_batches * f.batch_size * len(f.epoch_seconds) for f in fits)
    return sum(sum(f.epoch_seconds) for f in fits) / examples if examples else None


@dataclass
class Artifact:
    """The deployed form of the model, saved beside the records (git-ignored)."""

    path: str                        # relative to the suite folder
    sha256: str
    bytes: int
    format: str
    structure: bool                  # carries the layer structure to rebuild the model from (not an ONNX graph)


@dataclass
class WandbRun:
    mode: str                        # "offline", "online" or "disabled"
    id: str | None = None
    path: str | None = None          # online runs only
    dir: str | None = None
