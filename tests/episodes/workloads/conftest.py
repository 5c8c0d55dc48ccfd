"""A tiny CIFAR-10 folder in the real python-pickle format, generated for the tests."""

from __future__ import annotations

import pickle

import numpy as np
import pytest


def write_cifar_folder(path, *, n_train_batches=2, per_batch=24, n_test=16, seed=0):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i in range(1, n_train_batches + 1):
        batches[f"data_batch_{i}"] = per_batch
    batches["test_batch"] = n_test
    arrays = {}
    for name, n in batches.items():
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        blob = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                b"filenames": [f"{name}_{k}.png".encode() for k in range(n)]}
        with open(path / name, "wb") as fh:
            pickle.dump(blob, fh, protocol=2)
        arrays[name] = (data, labels)
    return arrays


@pytest.fixture
def cifar_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    arrays = write_cifar_folder(folder)
    return folder, arrays
