"""Vision tasks: the embedded Fashion-MNIST from Debian's package, distinct splits, train-only statistics."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from slimbench.tasks import build_task
from slimbench.tasks.vision import read_idx


def test_fashion_mnist_loads_from_the_debian_files():
    task = build_task("fashion-mnist", {"train_size": 2000, "val_size": 500, "test_size": 1000})
    assert task.spec.input_shape == (1, 28, 28) and task.num_classes == 10
    assert (len(task.train), len(task.val), len(task.test)) == (2000, 500, 1000)
    assert task.train.x.dtype == torch.float32 and task.train.y.dtype == torch.long
    # normalised with training statistics: the training split has mean 0 / std 1, the others only roughly
    assert abs(float(task.train.x.mean())) < 1e-4 and abs(float(task.train.x.std()) - 1) < 1e-3
    assert torch.bincount(task.train.y, minlength=10).tolist() == [200] * 10  # stratified subsample


def test_splits_are_disjoint():
    task = build_task("digits")
    rows = lambda s: {tuple(r.tolist()) for r in s.x.flatten(1)}  # noqa: E731
    train, val, test = rows(task.train), rows(task.val), rows(task.test)
    # sklearn digits has a few exact duplicate images; splits must not share more than those
    assert len(train & val) <= 3 and len(train & test) <= 3 and len(val & test) <= 3
    assert len(task.train) + len(task.val) + len(task.test) == 1797


def test_calibration_data_comes_from_training_split_only():
    task = build_task("digits")
    train_rows = {tuple(r.tolist()) for r in task.train.x.flatten(1)}
    for x, _ in task.calibration_dataloader(num_samples=100, batch_size=32):
        assert all(tuple(r.tolist()) in train_rows for r in x.flatten(1))


def test_idx_reader_parses_the_format(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + data.tobytes())
    assert np.array_equal(read_idx(path), data)
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(Exception, match="not an unsigned-byte IDX file"):
        read_idx(bad)
