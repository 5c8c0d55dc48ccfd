"""``shapes``: an example workload plug-in for esper-ab (see esper-ab's docs/PLUGINS.md).

A user's own pieces, written without esper-ab in mind except the last lines:

- ``ShapesNet``: a plain two-stage CNN (``stem``, ``body``, ``head``), made a host by
  ``ModuleHost``, which names the submodules whose outputs are slots.
- three seed blueprints: ``gain`` (a per-channel gain, zero at birth), ``mixer`` (a
  zero-initialized 1x1 convolution, declared to fit the ``body`` slot only) and ``smooth``
  (a depthwise 3x3 convolution); the placebo comes with esper-ab.
- data: 12x12 images of four shapes at random places under a random exposure, drawn from a
  generator seeded by the replicate (deterministic per replicate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from esper_ab.plugins import (
    Blueprint,
    BlueprintCatalog,
    ModuleHost,
    PretrainConfig,
    WorkloadConfig,
    WorkloadData,
    WorkloadPlugin,
)

__all__ = ["WORKLOAD", "ShapesNet", "ShapesOptions", "make_data", "make_host"]

IMAGE = 12


class ShapesNet(nn.Module):
    """conv-BN-ReLU (``stem``), conv-BN-ReLU-pool (``body``), global pool, linear ``head``."""

    def __init__(self, width: int = 8, n_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)).mean(dim=(2, 3)))


class Gain(nn.Module):
    """``s = h * (1 + g)``, one gain per channel, ``g = 0`` at birth: C parameters."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.zeros(width))

    def forward(self, h: Tensor) -> Tensor:
        return h * (1 + self.g[None, :, None, None])


class Mixer(nn.Module):
    """``s = h + conv1x1(h)`` with the convolution zero at birth: C^2 + C parameters."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv(h)


class Smooth(nn.Module):
    """``s = h + dw3x3(h)``, default init: 10C parameters."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, groups=width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv(h)


CATALOG = BlueprintCatalog("shapes-cnn", (
    Blueprint("gain", Gain, formula=lambda c: c, formula_text="C"),
    Blueprint("mixer", Mixer, slots=("body",), formula=lambda c: c * c + c,
              formula_text="C^2 + C"),
    Blueprint("smooth", Smooth, formula=lambda c: 10 * c, formula_text="10C"),
))


@dataclass(frozen=True)
class ShapesOptions:
    """The workload's options (``data:`` in a space): they are its config."""

    n_train: int = 512
    n_test: int = 512
    width: int = 8
    noise: float = 0.5
    exposure: float = 1.5   # log-gain uniform on [-exposure, exposure]

    def __post_init__(self) -> None:
        if self.n_train < 8 or self.n_test < 8 or self.width < 1:
            raise ValueError("shapes: n_train and n_test need 8 or more, width 1 or more")


def make_host(config: WorkloadConfig) -> ModuleHost:
    width = config.data.width
    return ModuleHost(ShapesNet(width), ["stem", "body"],
                      example_input=torch.zeros(2, 1, IMAGE, IMAGE))


def _shapes(n: int, options: ShapesOptions, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    label = torch.randint(0, 4, (n,), generator=gen)
    x = torch.zeros(n, 1, IMAGE, IMAGE)
    r, c = (torch.randint(2, IMAGE - 2, (n,), generator=gen) for _ in range(2))
    for i in range(n):
        ri, ci = int(r[i]), int(c[i])
        kind = int(label[i])
        if kind == 0:
            x[i, 0, ri, max(ci - 2, 0):ci + 3] = 1.0                      # horizontal bar
        elif kind == 1:
            x[i, 0, max(ri - 2, 0):ri + 3, ci] = 1.0                      # vertical bar
        elif kind == 2:
            x[i, 0, ri - 1:ri + 2, ci - 1:ci + 2] = 1.0                   # filled square
        else:
            x[i, 0, ri - 1:ri + 2, ci - 1:ci + 2] = 1.0                   # ring
            x[i, 0, ri, ci] = 0.0
    x = x + options.noise * torch.randn(x.shape, generator=gen)
    gain = torch.exp(options.exposure * (2 * torch.rand(n, generator=gen) - 1))
    return x * gain[:, None, None, None], label


def make_data(config: WorkloadConfig, replicate: int) -> WorkloadData:
    options: ShapesOptions = config.data
    gen = torch.Generator().manual_seed(7919 * replicate + 3)
    train_x, train_y = _shapes(options.n_train, options, gen)
    test_x, test_y = _shapes(options.n_test, options, gen)
    return WorkloadData(train_x, train_y, test_x, test_y)


WORKLOAD = WorkloadPlugin(
    name="shapes",
    host=make_host,
    data=make_data,
    catalog=CATALOG,
    default_slot="body",
    options=ShapesOptions,
    pretrain=PretrainConfig(steps=120, batch_size=32, lr=3e-3),
    tiny={"n_train": 128, "n_test": 128},
    episode={"steps_per_epoch": 4, "horizon_epochs": 4, "blend_epochs": 1},
    description="four shapes under a random exposure, 12x12, a two-stage CNN",
)
