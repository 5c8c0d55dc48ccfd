"""Transformer seed blueprints (DOMAIN.md §3). Every seed maps ``h`` of shape (B, T, D) to
``s`` of the same shape; every output layer that can be zero-initialized is."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_ab.episodes.blueprints._cnn import Noop, Placebo

__all__ = ["TRANSFORMER_SEEDS"]


class GatedLayerNorm(nn.Module):
    """``s = h + tanh(g) * (LayerNorm(h) - h)``, ``g = 0`` at birth: 2D + 1 parameters."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, h: Tensor) -> Tensor:
        return h + torch.tanh(self.gate) * (self.norm(h) - h)


class LoRA(nn.Module):
    """``s = h + B(A(h))``, rank r, no biases, ``B = 0`` at birth: 2rD parameters."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, rank, bias=False)
        self.up = nn.Linear(rank, width, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.down(h))


class LoRA8(LoRA):
    def __init__(self, width: int) -> None:
        super().__init__(width, 8)


class LoRA32(LoRA):
    def __init__(self, width: int) -> None:
        super().__init__(width, 32)


class SelfAttention(nn.Module):
    """``s = h + o(causal_mha(q(h), k(h), v(h)))``, 4 heads, all with bias, ``o = 0`` at
    birth: 4D^2 + 4D parameters."""

    n_heads = 4

    def __init__(self, width: int) -> None:
        super().__init__()
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def forward(self, h: Tensor) -> Tensor:
        b, t, d = h.shape
        heads = [z(h).view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                 for z in (self.q, self.k, self.v)]
        y = F.scaled_dot_product_attention(*heads, is_causal=True)
        return h + self.o(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """``s = h + fc2(gelu(fc1(h)))``, hidden ``k * D``, biases, ``fc2 = 0`` at birth:
    2kD^2 + (k + 1)D parameters."""

    def __init__(self, width: int, expansion: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, expansion * width)
        self.fc2 = nn.Linear(expansion * width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.fc2(F.gelu(self.fc1(h)))


class MLPSmall(MLP):
    def __init__(self, width: int) -> None:
        super().__init__(width, 2)


class MLPFull(MLP):
    def __init__(self, width: int) -> None:
        super().__init__(width, 4)


TRANSFORMER_SEEDS: dict[str, type[nn.Module]] = {
    "noop": Noop,
    "norm": GatedLayerNorm,
    "lora8": LoRA8,
    "lora32": LoRA32,
    "attention": SelfAttention,
    "mlp_small": MLPSmall,
    "mlp": MLPFull,
    "placebo": Placebo,
}
