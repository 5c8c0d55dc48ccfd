"""``synthetic-cnn``: generated 16x16 images with a planted per-image exposure nuisance.

Construction (3 channels, 4 classes):

- Channel 0 carries a grating of random phase whose orientation is a random bit ``a``
  (horizontal or vertical stripes); channel 1 an independent grating whose orientation is
  a bit ``b`` (diagonal or anti-diagonal).
- Channel 2 carries a context bit ``c`` as a faint tint (a mean shift of +-``tint`` under
  unit pixel noise); the class is ``2c + (a if c == 0 else b)``.
- Every pixel gets Gaussian noise, and then the whole image is multiplied by a random
  **gain** whose logarithm is uniform on ``[-gain_spread, gain_spread]`` (by default a
  range of e^4, about 55x). The gain carries no class information.

Why this plants value where it does (default slot ``block2.pre_pool``, C = 16):

- The host's BatchNorm normalizes with batch statistics, never per image. Under a 55x
  exposure range, dim images fall under its ReLU thresholds and bright ones dominate its
  running statistics, so the host stays well below what the task allows.
- The ``norm`` seed (2C + 1 = 33 parameters) is a GroupNorm with one group at C = 16
  (esper-lite's rule of at least 16 channels per group): a per-image normalization over
  all channels and positions. Its single gate ``tanh(g)`` learns at first order during
  incubation, and blending it in removes the exposure from everything downstream.
- Large convolutional seeds (``conv_heavy`` 4.7k parameters, ``depthwise``,
  ``bottleneck``) have non-zero or amplified outputs and, in TRAINING, a gradient that never
  shrinks (their output is not in the loss): they drift far along ``-dL/dy`` and disturb the
  host when blended. ``conv_small`` is dead at birth (exactly zero gradients).
- ``attention`` (squeeze-excite, gates start at sigmoid(3) = 0.95) moves little in the
  incubation window and is close to neutral.

Measured with the default episode (replicates 0-5, CPU, ``run_episode`` then
``gate_decisions`` under ``esper_lite_baseline``); value = held-out accuracy minus the
placebo fork's, in percentage points:

=============  ========  =============  ===========  ==============  ================
blueprint      params    value mean     value sd     valuable (1pp)  baseline G2 pass
=============  ========  =============  ===========  ==============  ================
norm           33        +2.4           1.7          4 / 6           6 / 6
attention      144       +0.1           0.1          0 / 6           1 / 6
conv_small     288       0 (dead)       0            0 / 6           0 / 6
depthwise      432       -3.2           3.0          0 / 6           6 / 6
bottleneck     864       -7.1           8.0          1 / 6           6 / 6
conv_light     2336      -3.1           4.1          0 / 6           6 / 6
conv_heavy     4672      -11.2          5.5          0 / 6           6 / 6
placebo        1         0 (exactly)    0            0 / 6           not gated
=============  ========  =============  ===========  ==============  ================

The slow test ``tests/workloads/test_synthetic_cnn.py`` checks this structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from esper_ab.episodes.hosts import CNNHostConfig
from esper_ab.episodes.workloads._base import PretrainConfig, WorkloadConfig
from esper_ab.episodes.workloads._plugin import WorkloadData, WorkloadPlugin, builtin_host
from esper_ab.errors import bad_value

__all__ = ["WORKLOAD", "SyntheticCNNData", "build", "default_config"]

NAME = "synthetic-cnn"


@dataclass(frozen=True)
class SyntheticCNNData:
    n_train: int = 1024
    n_test: int = 2048
    image_size: int = 16
    period: float = 4.0
    grating_amplitude: float = 0.6
    tint: float = 0.3
    noise: float = 1.0
    gain_spread: float = 2.0  # log-gain uniform on [-gain_spread, gain_spread]

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "image_size"):
            if getattr(self, name) < 1:
                raise bad_value(f"SyntheticCNNData.{name}", getattr(self, name), "use >= 1")
        if self.gain_spread < 0:
            raise bad_value("SyntheticCNNData.gain_spread", self.gain_spread, "use >= 0")


def default_config(**data_overrides: object) -> WorkloadConfig:
    data = SyntheticCNNData(**data_overrides)  # type: ignore[arg-type]
    return WorkloadConfig(
        name=NAME,
        host=CNNHostConfig(in_channels=3, n_classes=4, base_width=8, n_blocks=3,
                           image_size=data.image_size),
        data=data,
        pretrain=PretrainConfig(steps=800, batch_size=32, lr=3e-3),
        default_slot="block2.pre_pool",
    )


def _images(n: int, data: SyntheticCNNData, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    size = data.image_size
    a, b, c = (torch.randint(0, 2, (n,), generator=gen) for _ in range(3))
    label = 2 * c + torch.where(c == 0, a, b)
    coords = torch.arange(size, dtype=torch.float32)
    i, j = coords[:, None].expand(size, size), coords[None, :].expand(size, size)
    phase = torch.rand(n, 2, generator=gen) * 2 * math.pi
    k = 2 * math.pi / data.period
    along = torch.where(a[:, None, None] == 0, i, j)        # horizontal or vertical stripes
    ch0 = torch.sin(k * along + phase[:, 0, None, None])
    diag = torch.where(b[:, None, None] == 0, i + j, i - j)  # diagonal or anti-diagonal
    ch1 = torch.sin(k / math.sqrt(2) * diag + phase[:, 1, None, None])
    ch2 = ((2.0 * c.float() - 1.0) * (data.tint / data.grating_amplitude))[:, None, None]
    x = torch.stack([ch0, ch1, ch2.expand(n, size, size)], dim=1) * data.grating_amplitude
    x = x + data.noise * torch.randn(n, 3, size, size, generator=gen)
    gain = torch.exp(data.gain_spread * (2 * torch.rand(n, generator=gen) - 1))
    return x * gain[:, None, None, None], label


def build(config: WorkloadConfig, seed: int) -> WorkloadData:
    data: SyntheticCNNData = config.data  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(1_000_003 * seed + 11)
    train_x, train_y = _images(data.n_train, data, gen)
    test_x, test_y = _images(data.n_test, data, gen)
    return WorkloadData(train_x, train_y, test_x, test_y)


# The plug-in esper-ab resolves this workload by (entry point in pyproject.toml).
WORKLOAD = WorkloadPlugin(
    name=NAME, host=builtin_host, data=build, catalog="cnn", configure=default_config,
    tiny={"n_train": 256, "n_test": 256}, episode={},
    description="generated 16x16 images with a planted per-image exposure nuisance")
