"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

Real data with no download. The replicate seeds the train/test split; pixels are scaled to
[0, 1] and standardized with the training split's mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esper_ab.episodes.hosts import CNNHostConfig
from esper_ab.episodes.workloads._base import PretrainConfig, WorkloadConfig
from esper_ab.episodes.workloads._plugin import WorkloadData, WorkloadPlugin, builtin_host
from esper_ab.errors import bad_value

__all__ = ["WORKLOAD", "DigitsData", "build", "default_config"]

NAME = "digits"
N_IMAGES = 1797


@dataclass(frozen=True)
class DigitsData:
    n_test: int = 597

    def __post_init__(self) -> None:
        if not 1 <= self.n_test < N_IMAGES:
            raise bad_value("DigitsData.n_test", self.n_test, f"use 1 .. {N_IMAGES - 1}")


def default_config(**data_overrides: object) -> WorkloadConfig:
    return WorkloadConfig(
        name=NAME,
        host=CNNHostConfig(in_channels=1, n_classes=10, base_width=8, n_blocks=3, image_size=8),
        data=DigitsData(**data_overrides),  # type: ignore[arg-type]
        pretrain=PretrainConfig(steps=500, batch_size=32, lr=3e-3),
        default_slot="block2.pre_pool",
    )


def build(config: WorkloadConfig, seed: int) -> WorkloadData:
    from sklearn.datasets import load_digits

    data: DigitsData = config.data  # type: ignore[assignment]
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(7919 * seed + 3))
    test, train = order[:data.n_test], order[data.n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return WorkloadData(x[train], y[train], x[test], y[test])


# The plug-in esper-ab resolves this workload by (entry point in pyproject.toml).
WORKLOAD = WorkloadPlugin(
    name=NAME, host=builtin_host, data=build, catalog="cnn", configure=default_config,
    tiny={}, episode={},
    description="scikit-learn's bundled 8x8 digits (no download)")
