"""The blueprint registry: names, documented parameter-count formulas, builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from esper_ab.episodes.blueprints._cnn import CNN_SEEDS
from esper_ab.episodes.blueprints._transformer import TRANSFORMER_SEEDS
from esper_ab.errors import bad_value

Topology = Literal["cnn", "transformer"]
PLACEBO = "placebo"


@dataclass(frozen=True)
class BlueprintSpec:
    """One catalog entry. ``formula`` is the parameter count as a function of the width
    (C channels or model width D), written from DOMAIN.md §3, not counted from a module."""

    name: str
    topology: Topology
    formula: Callable[[int], int]
    formula_text: str
    zero_init: str
    residual_form: str


def _c(name: str, formula: Callable[[int], int], text: str, zero_init: str, form: str):
    return BlueprintSpec(name, "cnn", formula, text, zero_init, form)


def _t(name: str, formula: Callable[[int], int], text: str, zero_init: str, form: str):
    return BlueprintSpec(name, "transformer", formula, text, zero_init, form)


def _se_hidden(c: int) -> int:
    return max(1, c // 4)


def _bottleneck_width(c: int) -> int:
    return max(8, c // 4)


_SPECS: dict[Topology, dict[str, BlueprintSpec]] = {
    "cnn": {s.name: s for s in (
        _c("noop", lambda c: 0, "0", "-", "s = h"),
        _c("norm", lambda c: 2 * c + 1, "2C + 1", "gate g = 0",
           "s = h + tanh(g) (GroupNorm(h) - h)"),
        _c("attention", lambda c: 2 * c * _se_hidden(c) + c,
           "2Cb + C, b = max(1, C//4) (= C^2/2 + C when 4 | C)",
           "last layer weight 0, bias 3", "s = h * sigmoid(W2 relu(W1 pool(h)) + b2)"),
        _c("depthwise", lambda c: c * c + 11 * c, "C^2 + 11C", "none (default init)",
           "s = h + relu(GroupNorm(pw1x1(dw3x3(h))))"),
        _c("bottleneck", lambda c: (2 * c * _bottleneck_width(c)
                                     + 9 * _bottleneck_width(c) ** 2 + 2 * c),
           "2Cb + 9b^2 + 2C, b = max(8, C//4)", "up-projection 0",
           "s = h + GroupNorm(up(relu(conv3x3(relu(down(h))))))"),
        _c("conv_small", lambda c: c * c + 2 * c, "C^2 + 2C", "1x1 conv 0 (dead at birth)",
           "s = h + relu(GroupNorm(conv1x1(h)))"),
        _c("conv_light", lambda c: 9 * c * c + 2 * c, "9C^2 + 2C", "none (default init)",
           "s = h + relu(GroupNorm(conv3x3(h)))"),
        _c("conv_heavy", lambda c: 18 * c * c + 4 * c, "18C^2 + 4C", "none (default init)",
           "s = h + relu(GN(conv3x3(relu(GN(conv3x3(h))))))"),
        _c(PLACEBO, lambda c: 1, "1", "anchor p = 0", "s = h + 0 * p (zero effect)"),
    )},
    "transformer": {s.name: s for s in (
        _t("noop", lambda d: 0, "0", "-", "s = h"),
        _t("norm", lambda d: 2 * d + 1, "2D + 1", "gate g = 0",
           "s = h + tanh(g) (LayerNorm(h) - h)"),
        _t("lora8", lambda d: 16 * d, "16D", "B = 0", "s = h + B A h (rank 8)"),
        _t("lora32", lambda d: 64 * d, "64D", "B = 0", "s = h + B A h (rank 32)"),
        _t("attention", lambda d: 4 * d * d + 4 * d, "4D^2 + 4D", "output projection 0",
           "s = h + o(causal 4-head attention(h))"),
        _t("mlp_small", lambda d: 4 * d * d + 3 * d, "4D^2 + 3D", "fc2 0",
           "s = h + fc2(gelu(fc1(h))), hidden 2D"),
        _t("mlp", lambda d: 8 * d * d + 5 * d, "8D^2 + 5D", "fc2 0",
           "s = h + fc2(gelu(fc1(h))), hidden 4D"),
        _t(PLACEBO, lambda d: 1, "1", "anchor p = 0", "s = h + 0 * p (zero effect)"),
    )},
}
_BUILDERS: dict[Topology, dict[str, type[nn.Module]]] = {
    "cnn": CNN_SEEDS, "transformer": TRANSFORMER_SEEDS,
}


def _check_topology(topology: str) -> Topology:
    if topology not in _SPECS:
        raise bad_value("topology", topology, "use 'cnn' or 'transformer'")
    return topology  # type: ignore[return-value]


def list_blueprints(topology: Topology, *, include_placebo: bool = True) -> tuple[str, ...]:
    """Catalog names for ``topology`` in catalog order (the placebo last)."""
    names = tuple(_SPECS[_check_topology(topology)])
    return names if include_placebo else tuple(n for n in names if n != PLACEBO)


def blueprint_spec(name: str, topology: Topology) -> BlueprintSpec:
    specs = _SPECS[_check_topology(topology)]
    if name not in specs:
        raise bad_value("blueprint", name, f"choose one of {', '.join(specs)} for {topology}")
    return specs[name]


def param_count_formula(name: str, topology: Topology, width: int) -> int:
    """The documented parameter count of blueprint ``name`` at width ``width``."""
    _check_width(name, topology, width)
    return blueprint_spec(name, topology).formula(width)


def _check_width(name: str, topology: Topology, width: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise bad_value("width", width, "use a positive integer channel count / model width")
    if topology == "transformer" and name == "attention" and width % 4:
        raise bad_value("width", width, "the 4-head attention seed needs a multiple of 4")


def build_seed(
    name: str, *, topology: Topology, width: int, generator: torch.Generator | None = None
) -> nn.Module:
    """A fresh seed module of blueprint ``name``. With ``generator`` its default-initialized
    weights draw from a seed taken from it (the global RNG is left untouched)."""
    blueprint_spec(name, topology)
    _check_width(name, topology, width)
    cls = _BUILDERS[topology][name]
    if generator is None:
        module = cls(width)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = cls(width)
    module.blueprint = name  # type: ignore[assignment]
    module.topology = topology  # type: ignore[assignment]
    return module
