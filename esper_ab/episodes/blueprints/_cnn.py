"""CNN seed blueprints (DOMAIN.md §3). Every seed maps ``h`` of shape (B, C, H, W) to ``s``
of the same shape; the residual form is written in each class docstring."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CNN_SEEDS", "group_count"]


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``, esper-lite's rule: the largest of 32, 16, 8, 4, 2, 1
    that divides ``channels`` and leaves at least 16 channels per group; failing that, the
    largest of them that divides ``channels``. Up to 31 channels this is one group (a
    per-sample norm over all channels and positions)."""
    candidates = (32, 16, 8, 4, 2, 1)
    for groups in candidates:
        if channels % groups == 0 and channels // groups >= 16:
            return groups
    return next(g for g in candidates if channels % g == 0)


class Noop(nn.Module):
    """``s = h``. Zero parameters: every gradient statistic is "not applicable"."""

    def __init__(self, channels: int) -> None:
        super().__init__()

    def forward(self, h: Tensor) -> Tensor:
        return h


class Placebo(nn.Module):
    """``s = h + 0 * p``: one parameter, exactly zero effect and zero gradient.

    It takes the same lifecycle as any seed (own optimizer, incubation, blending), so a fork
    with it measures the lifecycle alone.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, h: Tensor) -> Tensor:
        return h + 0.0 * self.anchor


class GatedNorm(nn.Module):
    """``s = h + tanh(g) * (GroupNorm(h) - h)`` with ``g = 0`` at birth: 2C + 1 parameters.

    At birth only the gate has a gradient; the GroupNorm affine gets exactly zero.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, h: Tensor) -> Tensor:
        return h + torch.tanh(self.gate) * (self.norm(h) - h)


class SqueezeExcite(nn.Module):
    """``s = h * sigmoid(W2 relu(W1 mean_hw(h)) + b2)``; ``W2 = 0``, ``b2 = 3`` at birth.

    Hidden width ``b = max(1, C // 4)``, W1 without bias: ``2Cb + C`` parameters
    (``C^2/2 + C`` when 4 divides C). The zero last layer gives W1 an exactly zero gradient
    at birth; the gate starts at sigmoid(3) ~ 0.95, not at identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 4)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, 3.0)

    def forward(self, h: Tensor) -> Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(h.mean(dim=(2, 3))))))
        return h * scale[:, :, None, None]


class Depthwise(nn.Module):
    """``s = h + relu(GroupNorm(pw1x1(dw3x3(h))))``: depthwise 3x3 and pointwise 1x1 without
    biases, default init (non-zero at birth): 9C + C^2 + 2C = C^2 + 11C parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(group_count(channels), channels)

    def forward(self, h: Tensor) -> Tensor:
        return h + F.relu(self.norm(self.pw(self.dw(h))))


class Bottleneck(nn.Module):
    """``s = h + GroupNorm(up(relu(conv3x3(relu(down(h))))))``, width ``b = max(8, C // 4)``.

    ``up`` is zero-initialized, so everything before it has a zero gradient at birth, and the
    GroupNorm then normalizes an all-zero map: its gradient is scaled by 1/sqrt(eps).
    No conv biases: 2Cb + 9b^2 + 2C parameters.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        width = max(8, channels // 4)
        self.down = nn.Conv2d(channels, width, 1, bias=False)
        self.mid = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.up = nn.Conv2d(width, channels, 1, bias=False)
        self.norm = nn.GroupNorm(group_count(channels), channels)
        nn.init.zeros_(self.up.weight)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.norm(self.up(F.relu(self.mid(F.relu(self.down(h))))))


class ConvSmall(nn.Module):
    """``s = h + relu(GroupNorm(conv1x1(h)))`` with the conv zero-initialized: C^2 + 2C.

    Dead at birth and forever: the zero conv feeds GroupNorm a constant 0, its output is the
    zero bias, and relu'(0) = 0 stops every gradient.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(group_count(channels), channels)
        nn.init.zeros_(self.conv.weight)

    def forward(self, h: Tensor) -> Tensor:
        return h + F.relu(self.norm(self.conv(h)))


class ConvLight(nn.Module):
    """``s = h + relu(GroupNorm(conv3x3(h)))``, default init: 9C^2 + 2C parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(group_count(channels), channels)

    def forward(self, h: Tensor) -> Tensor:
        return h + F.relu(self.norm(self.conv(h)))


class ConvHeavy(nn.Module):
    """``s = h + relu(GN(conv3x3(relu(GN(conv3x3(h))))))``, default init: 18C^2 + 4C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = group_count(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, channels)

    def forward(self, h: Tensor) -> Tensor:
        z = F.relu(self.norm1(self.conv1(h)))
        return h + F.relu(self.norm2(self.conv2(z)))


CNN_SEEDS: dict[str, type[nn.Module]] = {
    "noop": Noop,
    "norm": GatedNorm,
    "attention": SqueezeExcite,
    "depthwise": Depthwise,
    "bottleneck": Bottleneck,
    "conv_small": ConvSmall,
    "conv_light": ConvLight,
    "conv_heavy": ConvHeavy,
    "placebo": Placebo,
}
