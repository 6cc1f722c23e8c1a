"""Vision tasks: Fashion-MNIST (embedded default, Debian package), CIFAR-10 (download), digits (tests)."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slimbench.core.errors import DatasetMissingError
from slimbench.tasks.base import (
    InputSpec,
    Split,
    Task,
    TaskParams,
    normalise_images,
    split_train_val,
    stratified_subset,
)
from slimbench.tasks.corruptions import VISION, CorruptionSource, normaliser
from slimbench.tasks.registry import register_task

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_DATA_ROOT = Path.home() / ".cache" / "slimbench" / "data"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format MNIST-style datasets ship in."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetMissingError(f"{path} is not an unsigned-byte IDX file (header {data[:4]!r})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_files(root: Path) -> dict[str, Path] | None:
    names = {
        "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
    }
    for base in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in names.items():
            hit = next((base / f"{stem}{ext}" for ext in (".gz", "") if (base / f"{stem}{ext}").exists()), None)
            if hit is None:
                break
            found[key] = hit
        else:
            return found
    return None


def _finish(name: str, spec: InputSpec, classes: list[str], x: torch.Tensor, y: torch.Tensor,
            test_x: torch.Tensor, test_y: torch.Tensor, params: TaskParams, info: dict) -> Task:
    train, val = split_train_val(x, y, params)
    test_idx = stratified_subset(test_y, params.test_size, params.split_seed + 2)
    test = Split(test_x[test_idx], test_y[test_idx])
    pixels = test.x                        # [0, 1] pixels: normalising below replaces test.x, not this tensor
    stats = normalise_images(train, val, test)
    corruptions = CorruptionSource(lambda idx: pixels[idx], normaliser(stats), VISION)
    return Task(name, spec, classes, train, val, test, info={**info, "normalisation": stats}, corruptions=corruptions)


@dataclass
class FashionParams(TaskParams):
    download: bool = True  # fall back to torchvision's download when the Debian files are absent


@register_task("fashion-mnist")
def fashion_mnist(params: FashionParams) -> Task:
    """Fashion-MNIST 28×28 grey, 10 classes; offline from Debian's dataset-fashion-mnist package."""
    roots = [Path(params.root)] if params.root else [FASHION_DEBIAN_DIR, DEFAULT_DATA_ROOT]
    files = next((f for r in roots if (f := _fashion_files(r))), None)
    download_error = ""
    if files is None and params.download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(roots[-1]), train=True, download=True)
            FashionMNIST(str(roots[-1]), train=False, download=True)
            files = _fashion_files(roots[-1])
        except Exception as exc:  # no network: fall through to the clear error below
            download_error = f" (download failed: {exc.__class__.__name__}: {exc})"
    if files is None:
        looked = ", ".join(str(r) for r in roots)
        raise DatasetMissingError(
            f"Fashion-MNIST files (train/t10k images-idx3 and labels-idx1, .gz) not found in: {looked}"
            f"{download_error}. Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            f"or pass `root:` pointing at a folder holding them, or allow `download: true` on a machine with internet."
        )
    arrays = {k: read_idx(p) for k, p in files.items()}
    to_x = lambda a: torch.from_numpy(a.copy()).float().div_(255).unsqueeze(1)  # noqa: E731
    to_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    spec = InputSpec(1, 28, 28)
    source = str(files["train_x"].parent)
    return _finish("fashion-mnist", spec, FASHION_CLASSES, to_x(arrays["train_x"]), to_y(arrays["train_y"]),
                   to_x(arrays["test_x"]), to_y(arrays["test_y"]), params, {"source": source})


@dataclass
class Cifar10Params(TaskParams):
    download: bool = True


@register_task("cifar10")
def cifar10(params: Cifar10Params) -> Task:
    """CIFAR-10 32×32 RGB, 10 classes; torchvision download (full suite, needs internet once)."""
    from torchvision.datasets import CIFAR10

    root = Path(params.root) if params.root else DEFAULT_DATA_ROOT
    try:
        train_ds = CIFAR10(str(root), train=True, download=params.download)
        test_ds = CIFAR10(str(root), train=False, download=params.download)
    except RuntimeError as exc:
        raise DatasetMissingError(
            f"CIFAR-10 not found under {root / 'cifar-10-batches-py'} ({exc}). Run once with internet and "
            f"`download: true`, or pass `root:` pointing at the folder holding cifar-10-batches-py."
        ) from None
    except OSError as exc:
        raise DatasetMissingError(f"CIFAR-10 download to {root} failed: {exc}. Needs internet once.") from None
    to_x = lambda d: torch.from_numpy(d.data).permute(0, 3, 1, 2).float().div_(255)  # noqa: E731
    to_y = lambda d: torch.tensor(d.targets, dtype=torch.long)  # noqa: E731
    return _finish("cifar10", InputSpec(3, 32, 32), CIFAR10_CLASSES, to_x(train_ds), to_y(train_ds),
                   to_x(test_ds), to_y(test_ds), params, {"source": str(root)})


@dataclass
class DigitsParams(TaskParams):
    val_size: int = 300
    test_fraction: float = 0.25


@register_task("digits")
def digits(params: DigitsParams) -> Task:
    """sklearn's 8×8 handwritten digits (1,797 images, ships with scikit-learn): tiny task for tests."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    gen = torch.Generator().manual_seed(params.split_seed)
    perm = torch.randperm(len(y), generator=gen)
    n_test = int(len(y) * params.test_fraction)
    test_idx, rest = perm[:n_test], perm[n_test:]
    return _finish("digits", InputSpec(1, 8, 8), [str(i) for i in range(10)], x[rest], y[rest],
                   x[test_idx], y[test_idx], params, {"source": "sklearn.datasets.load_digits"})
