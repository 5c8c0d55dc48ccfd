"""Host networks with named slots: an esper-style CNN and a GPT-style transformer.

A host never owns a seed. Its ``forward(x, slot_hook=None)`` calls
``slot_hook(slot_name, h)`` at every slot and continues with what the hook returns, so the
episode decides what sits in a slot (incubating seeds behind a straight-through estimator,
a blending seed, or nothing). With no hook the host is the plain network. Because seeds
live outside the host, ``host.parameters()`` is exactly the host's gradient group: the
whole backbone (the tied embedding included) and no slot module.

Slot names:

- CNN: ``block{i}.pre_pool`` (after block ``i``'s conv-BN-ReLU) and ``block{i}.post_pool``
  (after its 2x2 max-pool), ``i`` from 1. A block whose input is already 1x1 does not pool
  and has only ``block{i}.pre_pool``.
- Transformer: ``layer{i}`` after transformer layer ``i`` (from 1), before the final norm.

Any other network is a host too: satisfy :class:`Host`, or wrap an ``nn.Module`` in
:class:`ModuleHost` by naming the submodules whose outputs are slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_ab.errors import bad_value

__all__ = [
    "CNNHost",
    "CNNHostConfig",
    "Host",
    "ModuleHost",
    "SlotHook",
    "Topology",
    "TransformerHost",
    "TransformerHostConfig",
    "build_host",
]

Topology = Literal["cnn", "transformer"]
SlotHook = Callable[[str, Tensor], Tensor]


class Host(Protocol):
    """What the episode needs from a host network (an ``nn.Module``).

    ``forward(x, slot_hook=None)`` calls ``slot_hook(slot, h)`` at every slot and continues
    with what it returns; with no hook it is the plain network. ``parameters()`` is the host's
    gradient group. Initialization draws from torch's global RNG (esper-ab seeds it).
    """

    slot_names: tuple[str, ...]

    def slot_width(self, slot: str) -> int: ...

    def __call__(self, x: Tensor, slot_hook: SlotHook | None = None) -> Tensor: ...


@dataclass(frozen=True)
class CNNHostConfig:
    """conv-BN-ReLU blocks, channels doubling from ``base_width``, a global-pool classifier.

    The defaults (3 input channels, 8 -> 16 -> 32, 10 classes) are esper-lite's
    ``cifar_baseline``: about 6.4k parameters.
    """

    in_channels: int = 3
    n_classes: int = 10
    base_width: int = 8
    n_blocks: int = 3
    image_size: int = 32

    def __post_init__(self) -> None:
        for name in ("in_channels", "n_classes", "base_width", "n_blocks", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad_value(f"CNNHostConfig.{name}", value, "use a positive integer")
        if self.n_classes < 2:
            raise bad_value("CNNHostConfig.n_classes", self.n_classes, "use at least 2 classes")


@dataclass(frozen=True)
class TransformerHostConfig:
    """A pre-LN GPT: learned positions, tied embedding, GELU MLP (4x), no dropout."""

    vocab_size: int = 64
    context_length: int = 32
    width: int = 64
    n_layers: int = 2
    n_heads: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "width", "n_layers", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad_value(f"TransformerHostConfig.{name}", value, "use a positive integer")
        if self.width % self.n_heads:
            raise bad_value(
                "TransformerHostConfig.width", self.width,
                f"use a multiple of n_heads={self.n_heads}",
            )


def _unknown_slot(slot: str, valid: tuple[str, ...]) -> Exception:
    return bad_value("slot", slot, f"choose one of {', '.join(valid)}")


class CNNHost(nn.Module):
    """esper-style CNN: ``n_blocks`` x (conv3x3 -> BN -> ReLU -> [slot] -> maxpool -> [slot])."""

    topology: Topology = "cnn"

    def __init__(self, config: CNNHostConfig) -> None:
        super().__init__()
        self.config = config
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self._pools: list[bool] = []
        widths: dict[str, int] = {}
        c_in, size = config.in_channels, config.image_size
        for i in range(config.n_blocks):
            c_out = config.base_width * 2**i
            self.convs.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
            self.norms.append(nn.BatchNorm2d(c_out))
            pools = size >= 2
            self._pools.append(pools)
            widths[f"block{i + 1}.pre_pool"] = c_out
            if pools:
                widths[f"block{i + 1}.post_pool"] = c_out
                size //= 2
            c_in = c_out
        self.head = nn.Linear(c_in, config.n_classes)
        self._widths = widths
        self.slot_names: tuple[str, ...] = tuple(widths)

    def slot_width(self, slot: str) -> int:
        if slot not in self._widths:
            raise _unknown_slot(slot, self.slot_names)
        return self._widths[slot]

    def forward(self, x: Tensor, slot_hook: SlotHook | None = None) -> Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.relu(norm(conv(x)))
            if slot_hook is not None:
                x = slot_hook(f"block{i + 1}.pre_pool", x)
            if self._pools[i]:
                x = F.max_pool2d(x, 2)
                if slot_hook is not None:
                    x = slot_hook(f"block{i + 1}.post_pool", x)
        return self.head(x.mean(dim=(2, 3)))


class _CausalSelfAttention(nn.Module):
    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = _CausalSelfAttention(width, n_heads)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class TransformerHost(nn.Module):
    """GPT-style pre-LN transformer with a tied embedding; logits for every position.

    Initialization follows GPT-2: normal(0, 0.02) for linear and embedding weights, zero
    biases, and residual output projections scaled by ``1/sqrt(2 * n_layers)``.
    """

    topology: Topology = "transformer"

    def __init__(self, config: TransformerHostConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.tok = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.context_length, d)
        self.blocks = nn.ModuleList(_Block(d, config.n_heads) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.slot_names: tuple[str, ...] = tuple(f"layer{i + 1}" for i in range(config.n_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 0.02
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
        for block in self.blocks:
            for proj in (block.attn.proj, block.proj):
                nn.init.normal_(proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layers))

    def slot_width(self, slot: str) -> int:
        if slot not in self.slot_names:
            raise _unknown_slot(slot, self.slot_names)
        return self.config.width

    def forward(self, x: Tensor, slot_hook: SlotHook | None = None) -> Tensor:
        t = x.shape[1]
        positions = torch.arange(t, device=x.device)
        h = self.tok(x) + self.pos(positions)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if slot_hook is not None:
                h = slot_hook(f"layer{i + 1}", h)
        return F.linear(self.ln_f(h), self.tok.weight)  # tied embedding


def build_host(
    config: CNNHostConfig | TransformerHostConfig, *, generator: torch.Generator | None = None
) -> CNNHost | TransformerHost:
    """Build a host; its initialization draws from ``generator``'s seed when one is given."""
    if generator is None:
        return CNNHost(config) if isinstance(config, CNNHostConfig) else TransformerHost(config)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(config, CNNHostConfig):
            return CNNHost(config)
        return TransformerHost(config)


class ModuleHost(nn.Module):
    """Any ``nn.Module`` as a host: the outputs of the named submodules are the slots.

    ``slots`` names submodules as ``module.named_modules()`` does (``"layer2.1"``); the
    slot's name is the submodule's. Widths come from ``widths`` or, failing that, from one
    forward of ``example_input``: the size of dimension ``channel_dim`` of each slot's output
    (1 for images ``(B, C, H, W)``, -1 for sequences ``(B, T, D)``). ``forward(x, slot_hook)``
    routes each slot's output through the hook with forward hooks that live only for that
    call, so the wrapped module is left as it was.
    """

    def __init__(self, module: nn.Module, slots: Sequence[str], *,
                 widths: Mapping[str, int] | None = None, example_input: Tensor | None = None,
                 channel_dim: int = 1) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise bad_value("ModuleHost module", module, "wrap an nn.Module")
        names = tuple(slots)
        submodules = dict(module.named_modules())
        if not names:
            raise bad_value("ModuleHost slots", names, "name at least one submodule")
        for name in names:
            if not name or name not in submodules:
                listed = [n for n in submodules if n][:12]
                raise bad_value("slot", name, f"it is not a submodule of "
                                              f"{type(module).__name__}: use one of {listed}")
        self.module = module
        self.slot_names: tuple[str, ...] = names
        self._channel_dim = channel_dim
        if widths is not None:
            missing = [n for n in names if n not in widths]
            if missing:
                raise bad_value("ModuleHost widths", dict(widths),
                                f"give a width for every slot (missing {missing})")
            self._widths = {n: int(widths[n]) for n in names}
        elif example_input is not None:
            self._widths = self._probe(example_input)
        else:
            raise bad_value("ModuleHost widths", None,
                            "give widths={slot: width} or an example_input to measure them")

    def _probe(self, example_input: Tensor) -> dict[str, int]:
        shapes: dict[str, tuple[int, ...]] = {}

        def record(slot: str, h: Tensor) -> Tensor:
            shapes[slot] = tuple(h.shape)
            return h

        was_training = self.training
        self.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            self.forward(example_input, record)
        self.train(was_training)
        missing = [n for n in self.slot_names if n not in shapes]
        if missing:
            raise bad_value("slot", missing[0], "the module never called it on example_input: "
                                                "name submodules the forward pass runs")
        return {n: int(shapes[n][self._channel_dim]) for n in self.slot_names}

    def slot_width(self, slot: str) -> int:
        if slot not in self._widths:
            raise _unknown_slot(slot, self.slot_names)
        return self._widths[slot]

    def forward(self, x: Tensor, slot_hook: SlotHook | None = None) -> Tensor:
        if slot_hook is None:
            return self.module(x)
        submodules = dict(self.module.named_modules())
        handles = []
        for name in self.slot_names:
            def hook(_mod: nn.Module, _inp: object, out: object, _name: str = name) -> Tensor:
                if not isinstance(out, Tensor):
                    raise bad_value("slot", _name, f"its output is a {type(out).__name__}, not a "
                                                   "tensor: name a submodule that returns one")
                return slot_hook(_name, out)
            handles.append(submodules[name].register_forward_hook(hook))
        try:
            return self.module(x)
        finally:
            for handle in handles:
                handle.remove()
