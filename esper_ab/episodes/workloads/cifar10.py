"""``cifar10``: a local CIFAR-10 folder in the python pickle format (no download, ever).

The folder holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` as distributed in
``cifar-10-python.tar.gz``; each is a pickled dict with ``data`` (N x 3072 uint8, channel
planes of 32x32) and ``labels``. A folder may hold fewer training batches (at least one).
The pickles are read with an unpickler that only admits the numpy types this format needs.
The replicate seeds which ``n_train`` / ``n_test`` images are used.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from esper_ab.episodes.hosts import CNNHostConfig
from esper_ab.episodes.workloads._base import PretrainConfig, WorkloadConfig
from esper_ab.episodes.workloads._plugin import WorkloadData, WorkloadPlugin, builtin_host
from esper_ab.errors import DataError, bad_value

__all__ = ["WORKLOAD", "Cifar10Data", "build", "default_config", "load_cifar10_folder"]

NAME = "cifar10"
_FIX = ("point --data-dir at the extracted 'cifar-10-batches-py' folder (data_batch_1..5 "
        "and test_batch from cifar-10-python.tar.gz)")
# CIFAR-10 training-set channel statistics (of pixel / 255).
_MEAN = (0.4914, 0.4822, 0.4465)
_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Cifar10Data:
    data_dir: str
    n_train: int = 5000
    n_test: int = 2000

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test"):
            if getattr(self, name) < 1:
                raise bad_value(f"Cifar10Data.{name}", getattr(self, name), "use >= 1")


def default_config(*, data_dir: str | None = None, **data_overrides: object) -> WorkloadConfig:
    if not data_dir:
        raise DataError(f"cifar10 needs a data folder (data_dir={data_dir!r}): {_FIX}")
    if not Path(data_dir).expanduser().is_dir():
        raise DataError(f"cifar10 data_dir={str(data_dir)!r} is not a folder: {_FIX}")
    return WorkloadConfig(
        name=NAME,
        host=CNNHostConfig(in_channels=3, n_classes=10, base_width=8, n_blocks=3, image_size=32),
        data=Cifar10Data(str(Path(data_dir).expanduser().resolve()), **data_overrides),  # type: ignore[arg-type]
        pretrain=PretrainConfig(steps=400, batch_size=32, lr=3e-3),
        default_slot="block2.pre_pool",
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "bytes"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch, checked: a non-empty (N, 3072) array of whole-number pixels in 0..255 and
    N whole-number labels in 0..9 (anything else is one ``DataError`` line)."""
    try:
        with path.open("rb") as fh:
            blob = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
        data = np.asarray(blob[b"data"] if b"data" in blob else blob["data"])
        labels = np.asarray(blob[b"labels"] if b"labels" in blob else blob["labels"])
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError,
            OverflowError, MemoryError, pickle.UnpicklingError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: "
                        f"{first}): {_FIX}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 \
            or data.shape[0] != labels.shape[0]:
        raise DataError(f"{path} has data of shape {data.shape} and labels of shape "
                        f"{labels.shape}, expected (N, 3072) and N labels: {_FIX}")
    if data.shape[0] == 0:
        raise DataError(f"{path} is an empty batch (0 images): {_FIX}")
    if data.dtype.kind not in "iu" or labels.dtype.kind not in "iu":
        raise DataError(f"{path} holds {data.dtype} pixels and {labels.dtype} labels, not whole "
                        f"numbers: {_FIX}")
    if data.min() < 0 or data.max() > 255:
        raise DataError(f"{path} has pixels outside 0..255 ({data.min()}..{data.max()}): {_FIX}")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path} has labels outside 0..9 ({labels.min()}..{labels.max()}): "
                        f"{_FIX}")
    return data.astype(np.uint8), labels.astype(np.int64)


def load_cifar10_folder(data_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x uint8 N x 3 x 32 x 32, train_y, test_x, test_y) from a CIFAR-10 folder."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"cifar10 data_dir={str(folder)!r} is not a folder: {_FIX}")
    train_files = sorted(folder.glob("data_batch_*"))
    test_file = folder / "test_batch"
    if not train_files or not test_file.is_file():
        raise DataError(f"cifar10 data_dir={str(folder)!r} has no data_batch_* or no "
                        f"test_batch: {_FIX}")
    parts = [_read_batch(p) for p in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(test_file)

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(-1, 3, 32, 32).copy())

    return (images(train_x), torch.from_numpy(train_y), images(test_x), torch.from_numpy(test_y))


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(_MEAN)[None, :, None, None]
    std = torch.tensor(_STD)[None, :, None, None]
    return (x.float() / 255.0 - mean) / std


def build(config: WorkloadConfig, seed: int) -> WorkloadData:
    data: Cifar10Data = config.data  # type: ignore[assignment]
    train_x, train_y, test_x, test_y = load_cifar10_folder(data.data_dir)
    gen = torch.Generator().manual_seed(104729 * seed + 5)
    tr = torch.randperm(train_x.shape[0], generator=gen)[:data.n_train]
    te = torch.randperm(test_x.shape[0], generator=gen)[:data.n_test]
    return WorkloadData(_normalize(train_x[tr]), train_y[tr],
                        _normalize(test_x[te]), test_y[te])


# The plug-in esper-ab resolves this workload by (entry point in pyproject.toml).
WORKLOAD = WorkloadPlugin(
    name=NAME, host=builtin_host, data=build, catalog="cnn", configure=default_config,
    tiny={"n_train": 256, "n_test": 256}, episode={"steps_per_epoch": 5, "horizon_epochs": 6},
    description="a local CIFAR-10 python-pickle folder (no download)")
