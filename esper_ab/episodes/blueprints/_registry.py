"""Blueprint catalogs: which seeds exist, which slots each fits, how each is built.

A :class:`BlueprintCatalog` maps blueprint names to :class:`Blueprint` entries. Each entry
has a factory ``width -> nn.Module`` (the seed maps the slot activation ``h`` to ``s`` of
the same shape), may restrict the slots it fits (``slots``: names, ``fits``: a check of the
width that returns the reason it does not fit) and may document its parameter count. Every
catalog gets the ``placebo`` (zero effect, same lifecycle) for free.

The two built-in catalogs, ``cnn`` and ``transformer`` (DOMAIN.md §3), are catalogs like any
user's; ``topology`` arguments take a catalog or the name of a registered one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from esper_ab.episodes.blueprints._cnn import CNN_SEEDS, Placebo
from esper_ab.episodes.blueprints._transformer import TRANSFORMER_SEEDS
from esper_ab.errors import ConfigError, bad_value

__all__ = [
    "PLACEBO",
    "Blueprint",
    "BlueprintCatalog",
    "BlueprintSpec",
    "blueprint_spec",
    "build_seed",
    "get_catalog",
    "list_blueprints",
    "list_catalogs",
    "param_count_formula",
    "register_catalog",
]

PLACEBO = "placebo"
SeedFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class Blueprint:
    """One catalog entry.

    ``factory(width)`` builds a fresh seed for a slot of ``width`` channels (CNN) or model
    width (transformer); it draws its initialization from torch's global RNG, which
    :meth:`BlueprintCatalog.build` seeds. ``slots`` (empty: every slot) names the slots it
    fits; ``fits(width)`` returns ``None`` when it can be built at ``width``, else the reason.
    ``formula`` is the documented parameter count (optional; written from the design, not
    counted from the module).
    """

    name: str
    factory: SeedFactory
    slots: tuple[str, ...] = ()
    fits: Callable[[int], str | None] | None = None
    formula: Callable[[int], int] | None = None
    formula_text: str = ""
    zero_init: str = ""
    residual_form: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise bad_value("Blueprint.name", self.name, "use a non-empty string")
        if not callable(self.factory):
            raise bad_value(f"Blueprint({self.name}).factory", self.factory,
                            "use a callable width -> nn.Module")
        object.__setattr__(self, "slots", tuple(self.slots))

    def misfit(self, slot: str, width: int) -> str | None:
        """Why this blueprint cannot sit in ``slot`` of ``width`` (``None``: it fits)."""
        if self.slots and slot not in self.slots:
            return f"it fits only slots {list(self.slots)}"
        if not isinstance(width, int) or width < 1:
            return f"the width {width!r} is not a positive integer"
        return None if self.fits is None else self.fits(width)


BlueprintSpec = Blueprint  # the name of a catalog entry before catalogs were open


@dataclass(frozen=True, eq=False)
class BlueprintCatalog:
    """Named blueprints in a fixed order; the placebo is appended when absent."""

    name: str
    blueprints: tuple[Blueprint, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        entries = tuple(self.blueprints)
        bad = [b for b in entries if not isinstance(b, Blueprint)]
        if bad:
            raise bad_value(f"BlueprintCatalog({self.name}).blueprints", bad[0],
                            "use Blueprint(name, factory) entries")
        names = [b.name for b in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise bad_value(f"BlueprintCatalog({self.name}) blueprint", dupes[0],
                            "give every blueprint a distinct name")
        if PLACEBO not in names:
            entries = (*entries, Blueprint(PLACEBO, Placebo, formula=lambda w: 1,
                                           formula_text="1", zero_init="anchor p = 0",
                                           residual_form="s = h + 0 * p (zero effect)"))
        object.__setattr__(self, "blueprints", entries)

    @classmethod
    def from_factories(cls, name: str, factories: dict[str, SeedFactory], *,
                       slots: dict[str, Iterable[str]] | None = None) -> BlueprintCatalog:
        """A catalog from ``{blueprint name: factory}`` (and optional slots per name)."""
        slots = slots or {}
        return cls(name, tuple(Blueprint(n, f, slots=tuple(slots.get(n, ())))
                               for n, f in factories.items()))

    def names(self, *, include_placebo: bool = True) -> tuple[str, ...]:
        return tuple(b.name for b in self.blueprints
                     if include_placebo or b.name != PLACEBO)

    def get(self, name: str) -> Blueprint:
        for b in self.blueprints:
            if b.name == name:
                return b
        raise bad_value("blueprint", name, f"choose one of {', '.join(self.names())} for "
                                           f"catalog {self.name}")

    def misfit(self, name: str, slot: str, width: int) -> str | None:
        """Why blueprint ``name`` cannot sit in ``slot`` of ``width`` (``None``: it fits)."""
        return self.get(name).misfit(slot, width)

    def build(self, name: str, *, width: int, generator: torch.Generator | None = None) -> nn.Module:
        """A fresh seed of ``name``. With ``generator`` its default-initialized weights
        draw from a seed taken from it (the global RNG is left untouched)."""
        entry = self.get(name)
        _check_width(entry, width)
        if generator is None:
            module = entry.factory(width)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = entry.factory(width)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"blueprint {name} of catalog {self.name} built a "
                              f"{type(module).__name__}, not an nn.Module: return a module")
        module.blueprint = name  # type: ignore[assignment]
        module.topology = self.name  # type: ignore[assignment]
        return module


def _c(name: str, formula: Callable[[int], int], text: str, zero_init: str, form: str):
    return Blueprint(name, CNN_SEEDS[name], formula=formula, formula_text=text,
                     zero_init=zero_init, residual_form=form)


def _t(name: str, formula: Callable[[int], int], text: str, zero_init: str, form: str):
    fits = _four_heads if name == "attention" else None
    return Blueprint(name, TRANSFORMER_SEEDS[name], fits=fits, formula=formula,
                     formula_text=text, zero_init=zero_init, residual_form=form)


def _four_heads(width: int) -> str | None:
    return None if width % 4 == 0 else "the 4-head attention seed needs a multiple of 4"


def _se_hidden(c: int) -> int:
    return max(1, c // 4)


def _bottleneck_width(c: int) -> int:
    return max(8, c // 4)


_BUILTIN: dict[str, tuple[Blueprint, ...]] = {
    "cnn": (
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
    ),
    "transformer": (
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
    ),
}
_CATALOGS: dict[str, BlueprintCatalog] = {
    name: BlueprintCatalog(name, entries) for name, entries in _BUILTIN.items()}


def register_catalog(catalog: BlueprintCatalog) -> BlueprintCatalog:
    """Make ``catalog`` findable by its name in this process (a workload does this when it
    is resolved). Registering another catalog under a taken name is an error."""
    if not isinstance(catalog, BlueprintCatalog):
        raise bad_value("catalog", catalog, "use a BlueprintCatalog")
    held = _CATALOGS.get(catalog.name)
    if held is not None and held is not catalog and held.names() != catalog.names():
        raise bad_value("catalog name", catalog.name,
                        f"it is taken by another catalog ({', '.join(held.names())}): "
                        "rename yours")
    _CATALOGS.setdefault(catalog.name, catalog)
    return _CATALOGS[catalog.name]


def list_catalogs() -> tuple[str, ...]:
    return tuple(_CATALOGS)


def get_catalog(topology: str | BlueprintCatalog) -> BlueprintCatalog:
    """A catalog itself, or the registered catalog of that name."""
    if isinstance(topology, BlueprintCatalog):
        return topology
    if topology not in _CATALOGS:
        raise bad_value("topology", topology, f"use a catalog: one of {', '.join(_CATALOGS)}, "
                                              "or a BlueprintCatalog")
    return _CATALOGS[topology]


def list_blueprints(topology: str | BlueprintCatalog, *,
                    include_placebo: bool = True) -> tuple[str, ...]:
    """Catalog names for ``topology`` in catalog order (the placebo last)."""
    return get_catalog(topology).names(include_placebo=include_placebo)


def blueprint_spec(name: str, topology: str | BlueprintCatalog) -> Blueprint:
    return get_catalog(topology).get(name)


def param_count_formula(name: str, topology: str | BlueprintCatalog, width: int) -> int:
    """The documented parameter count of blueprint ``name`` at width ``width``."""
    entry = blueprint_spec(name, topology)
    _check_width(entry, width)
    if entry.formula is None:
        raise bad_value("blueprint", name, "it documents no parameter-count formula")
    return entry.formula(width)


def _check_width(entry: Blueprint, width: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise bad_value("width", width, "use a positive integer channel count / model width")
    reason = None if entry.fits is None else entry.fits(width)
    if reason is not None:
        raise bad_value("width", width, reason)


def build_seed(name: str, *, topology: str | BlueprintCatalog, width: int,
               generator: torch.Generator | None = None) -> nn.Module:
    """A fresh seed module of blueprint ``name`` from catalog ``topology``. With
    ``generator`` its default-initialized weights draw from a seed taken from it (the global
    RNG is left untouched)."""
    catalog = get_catalog(topology)
    _check_width(catalog.get(name), width)
    return catalog.build(name, width=width, generator=generator)
