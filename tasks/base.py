"""The Task: a LightningDataModule plus what a model needs to be built for it (input spec, classes)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from slimbench.core.errors import SlimbenchError
from slimbench.core.params import bounded
from slimbench.tasks.corruptions import CorruptionSource


@dataclass(frozen=True)
class InputSpec:
    """What a baseline consumes, independent of modality.

    The backbone always sees an image-like `[B, channels, height, width]` tensor. For text, the model
    receives token ids `[B, height]` and its first layer embeds them into a `1 × height × width` map
    (`token_vocab` tokens, `width` = embedding dimension), so the embedding is part of the model.
    """

    channels: int
    height: int
    width: int
    modality: str = "image"
    token_vocab: int | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input (without the batch dimension)."""
        return (self.height,) if self.token_vocab else (self.channels, self.height, self.width)

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.long if self.token_vocab else torch.float32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskParams:
    """Parameters every task accepts; tasks subclass this to add their own."""

    root: str | None = None          # where the dataset lives (or is downloaded to); None = task default
    train_size: int | None = bounded(None, ge=1)   # subsample the training split (stratified), None = all
    val_size: int = bounded(5000, ge=1)             # carved from the training data; never the test split
    test_size: int | None = bounded(None, ge=1)    # subsample the test split, None = all
    split_seed: int = 0              # fixed, so every run seed sees the same split


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


class TestSplitAccessError(SlimbenchError):
    """A method tried to read the test split, which only the harness evaluates on."""


class Task(L.LightningDataModule):
    """In-memory train / validation / test splits, already normalised; loaders come from Lightning hooks.

    `test` is None in the copy methods are handed (`without_test`): the harness alone holds the test split.
    """

    name: str   # always set (Lightning declares it optional on data modules that have none)

    def __init__(
        self,
        name: str,
        spec: InputSpec,
        class_names: list[str],
        train: Split,
        val: Split,
        test: Split | None,
        info: dict[str, Any] | None = None,
        corruptions: CorruptionSource | None = None,
    ):
        super().__init__()
        self.name, self.spec, self.class_names = name, spec, list(class_names)
        self.train, self.val, self.test = train, val, test
        self.info: dict[str, Any] = info or {}
        self.corruptions = corruptions

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def without_test(self) -> Task:
        """This task without its test split: the only task object a method (or a callable it is handed) reaches.

        Hiding `test` by attribute name is not enough: a method can walk from any bound loader or closure to the
        object behind it. So methods get a shallow copy that shares train and validation (read, never written) but
        holds no test data at all: no test split, no corruption source (it draws from the test split) and no `info`
        (test-split figures such as references). Idempotent, so a view of a view is the same copy.
        """
        if self.test is None and self.corruptions is None and not self.info:
            return self
        stripped = copy.copy(self)
        stripped.test, stripped.corruptions, stripped.info = None, None, {}
        return stripped

    def _test_split(self) -> Split:
        if self.test is None:
            raise TestSplitAccessError(
                f"this copy of task {self.name!r} holds no test split: it is the one methods are handed, and the test "
                f"split is the harness's alone")
        return self.test

    def _loader(self, split: Split, shuffle: bool, batch_size: int, seed: int = 0) -> DataLoader:
        gen = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            TensorDataset(split.x, split.y), batch_size=batch_size, shuffle=shuffle, generator=gen
        )

    def train_dataloader(self, batch_size: int = 128) -> DataLoader:
        """Shuffled with the current seed; the batch size is the fit's (TrainConfig), never stored on the task."""
        return self._loader(self.train, shuffle=True, batch_size=batch_size, seed=torch.initial_seed() % 2**31)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, shuffle=False, batch_size=512)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test_split(), shuffle=False, batch_size=512)

    def calibration_dataloader(self, num_samples: int, batch_size: int = 64, seed: int = 0) -> DataLoader:
        """Calibration data for quantization: drawn from the training split only, never test."""
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self.train), generator=gen)[:num_samples]
        return self._loader(Split(self.train.x[idx], self.train.y[idx]), shuffle=False, batch_size=batch_size)

    def example_input(self, batch_size: int) -> torch.Tensor:
        """Real training inputs (repeated if needed) for latency and FLOP counting."""
        reps = -(-batch_size // len(self.train))
        x = self.train.x if reps == 1 else self.train.x.repeat(reps, *([1] * (self.train.x.dim() - 1)))
        return x[:batch_size].clone()

    def corruption_names(self) -> list[str]:
        return self.corruptions.names() if self.corruptions else []

    def corrupted_index(self, size: int | None, seed: int = 0) -> torch.Tensor:
        """Test-split positions of the stratified subset every corrupted copy is drawn from (sorted)."""
        return stratified_subset(self._test_split().y, size, seed).sort().values

    def corrupted_test(self, name: str, severity: int, size: int | None, seed: int = 0) -> Split:
        """A stratified subset of the test split (the same for every severity), corrupted; severity 0 = clean."""
        self._test_split()   # the copy methods see has neither: say why, not "no corruptions"
        if self.corruptions is None:
            raise SlimbenchError(f"task {self.name!r} declares no corruptions")
        index = self.corrupted_index(size, seed)
        return Split(self.corruptions.inputs(index, name, severity, seed), self._test_split().y[index])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_spec": self.spec.to_dict(),
            "num_classes": self.num_classes,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self._test_split())},
            **self.info,
        }


def stratified_subset(y: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Indices of a class-balanced random subset of size n (all indices when n is None or too big)."""
    gen = torch.Generator().manual_seed(seed)
    if n is None or n >= len(y):
        return torch.randperm(len(y), generator=gen)
    classes = torch.unique(y)
    picks = []
    for i, c in enumerate(classes):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        picks.append(idx[:share])
    out = torch.cat(picks)
    return out[torch.randperm(len(out), generator=gen)]


def split_train_val(x: torch.Tensor, y: torch.Tensor, params: TaskParams) -> tuple[Split, Split]:
    """Carve a validation split out of the training data (stratified), then subsample training."""
    order = stratified_subset(y, None, params.split_seed)
    val_n = min(params.val_size, len(y) // 5)
    val_idx = stratified_subset(y, val_n, params.split_seed)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[val_idx] = False
    rest = order[mask[order]]
    train_idx = rest[stratified_subset(y[rest], params.train_size, params.split_seed + 1)]
    return Split(x[train_idx], y[train_idx]), Split(x[val_idx], y[val_idx])


def normalise_images(train: Split, *others: Split) -> dict[str, list[float]]:
    """Per-channel mean/std from the training split only, applied to every split in place."""
    dims = [0] + list(range(2, train.x.dim()))
    mean = train.x.float().mean(dim=dims, keepdim=True)
    std = train.x.float().std(dim=dims, keepdim=True).clamp_min(1e-6)
    for s in (train, *others):
        s.x = ((s.x.float() - mean) / std).contiguous()
    return {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}


class MethodView:
    """What a method may see of a task: training, validation and calibration data, never the test split.

    A method that fine-tunes or calibrates on test labels would report a win it did not earn; the harness
    alone evaluates on test. Everything else a method needs (spec, classes, loaders, examples) passes through.
    Names are refused with a clear error; underneath, the view wraps `task.without_test()`, so reaching past it
    (`object.__getattribute__(view, "_task")`, a loader's `__self__`) finds no test data either.
    """

    ALLOWED = ("name", "spec", "class_names", "num_classes", "train", "val", "train_dataloader",
               "val_dataloader", "calibration_dataloader", "example_input")

    def __init__(self, task: Task):
        object.__setattr__(self, "_task", task.without_test())

    def __getattr__(self, name: str) -> Any:
        if name in self.ALLOWED:
            return getattr(self._task, name)
        if "test" in name or name in ("info", "describe"):   # info carries test-split figures (references)
            raise TestSplitAccessError(
                f"a method may not read the task's {name!r}: the test split is the harness's alone; methods "
                f"see {', '.join(self.ALLOWED)}")
        raise AttributeError(f"{type(self._task).__name__} view has no {name!r}; methods see {', '.join(self.ALLOWED)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a method may not change the shared task (tried to set {name!r})")
