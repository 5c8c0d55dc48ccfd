"""Contract checks of a workload plug-in, run before anything trains.

Each failure is one :class:`ContractError` line naming the fault and the fix:

1. the import path does not resolve (``resolve_workload``);
2. a required method or attribute is missing (host: an ``nn.Module`` with ``slot_names``,
   ``slot_width`` and ``forward(x, slot_hook)``; data: four tensors);
3. a slot name is unknown;
4. a blueprint does not fit a slot, or cannot be built at the slot's width;
5. the host is not bit-identical while seeds incubate (one batch, alpha 0);
6. data is not deterministic per replicate (two builds of one replicate);
7. a factory (host, data, blueprint, loss) raises.

``esper-ab validate SPACE.yaml`` runs :func:`check_workload` for every workload of a space.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from esper_ab.episodes.blueprints import PLACEBO
from esper_ab.episodes.workloads import WorkloadConfig, WorkloadData
from esper_ab.errors import ConfigError, EsperABError

__all__ = ["ContractError", "ContractReport", "check_slots_and_blueprints", "check_workload",
           "fitting_keys"]


class ContractError(ConfigError):
    """A workload plug-in breaks its contract (one line: the fault and the fix)."""


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_workload` checked and found."""

    workload: str
    slots: tuple[str, ...]
    slot_widths: dict[str, int]
    blueprints: tuple[str, ...]
    n_train: int
    n_test: int


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def _call(what: str, name: str, fix: str, fn: Callable[..., Any], *args: Any,
          **kwargs: Any) -> Any:
    """Run a user's factory; any exception it raises becomes one ContractError line."""
    try:
        return fn(*args, **kwargs)
    except EsperABError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's code: any failure is one line
        raise ContractError(f"workload {name}: {what} raised {_one_line(exc)}: {fix}") from None


def _host(config: WorkloadConfig) -> nn.Module:
    plugin = config.plugin
    host = _call("its host factory", config.name, "fix the host factory", plugin.build_host,
                 config, generator=torch.Generator().manual_seed(0))
    fix = ("return an nn.Module with slot_names, slot_width(slot) and forward(x, slot_hook), "
           "or wrap yours in esper_ab.plugins.ModuleHost")
    if not isinstance(host, nn.Module):
        raise ContractError(f"workload {config.name}: its host is a {type(host).__name__}, not "
                            f"an nn.Module: {fix}")
    for attr in ("slot_names", "slot_width"):
        if not hasattr(host, attr):
            raise ContractError(f"workload {config.name}: its host {type(host).__name__} has no "
                                f"{attr}: {fix}")
    names = host.slot_names
    if not isinstance(names, tuple | list) or not names or not all(
            isinstance(n, str) for n in names):
        raise ContractError(f"workload {config.name}: its host's slot_names is {names!r:.80}, "
                            f"not a non-empty tuple of names: {fix}")
    if not callable(host.slot_width):
        raise ContractError(f"workload {config.name}: its host's slot_width is not a method: "
                            f"{fix}")
    params = list(inspect.signature(host.forward).parameters)
    if len(params) < 2:
        raise ContractError(f"workload {config.name}: its host's forward({', '.join(params)}) "
                            f"takes no slot_hook: {fix}")
    return host


def _width(config: WorkloadConfig, host: nn.Module, slot: str) -> int:
    if slot not in host.slot_names:
        raise ContractError(f"slot={slot!r} is invalid: workload {config.name} has no slot "
                            f"{slot!r}; use one of "
                            f"{list(host.slot_names)}")
    width = _call(f"its host's slot_width({slot!r})", config.name, "fix slot_width",
                  host.slot_width, slot)
    if not isinstance(width, int) or width < 1:
        raise ContractError(f"workload {config.name}: slot_width({slot!r}) is {width!r}, not a "
                            "positive int: return the slot's channel count / model width")
    return width


def check_slots_and_blueprints(config: WorkloadConfig, slots: Sequence[str],
                               blueprints: Sequence[str]) -> dict[str, int]:
    """Every slot is the host's; every named blueprint is in the catalog and fits every
    slot. Returns the slot widths."""
    host = _host(config)
    catalog = config.catalog
    widths = {slot: _width(config, host, slot) for slot in slots}
    for bp in blueprints:
        if bp not in catalog.names():
            raise ContractError(f"workload {config.name}: blueprint {bp!r} is not in catalog "
                                f"{catalog.name}: use one of {list(catalog.names())}")
        for slot, width in widths.items():
            reason = catalog.misfit(bp, slot, width)
            if reason is not None:
                raise ContractError(f"workload {config.name}: blueprint {bp} does not fit slot "
                                    f"{slot} (width {width}): {reason}; drop it or the slot")
    return widths


def fitting_keys(config: WorkloadConfig, slots: Sequence[str],
                 blueprints: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(slot, blueprint) for every blueprint that fits each slot, in catalog order."""
    host = config.plugin.build_host(config, generator=torch.Generator().manual_seed(0))
    catalog = config.catalog
    return tuple((slot, bp) for slot in slots for bp in blueprints
                 if bp == PLACEBO or catalog.misfit(bp, slot, host.slot_width(slot)) is None)


def _data(config: WorkloadConfig, replicate: int) -> WorkloadData:
    data = _call(f"its data loader (replicate {replicate})", config.name, "fix the data loader",
                 config.plugin.build_data, config, replicate)
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] < 1 or x.shape[0] != y.shape[0]:
            raise ContractError(f"workload {config.name}: its {split} data has x of shape "
                                f"{tuple(x.shape)} and y of shape {tuple(y.shape)}: give N >= 1 "
                                "examples and N targets")
    return data


def _activations(host: nn.Module, x: Tensor, slots: Sequence[str]) -> dict[str, Tensor]:
    seen: dict[str, Tensor] = {}

    def record(slot: str, h: Tensor) -> Tensor:
        seen.setdefault(slot, h.detach())
        return h

    host(x, record)
    return seen


def check_workload(config: WorkloadConfig, *, slots: Sequence[str] = (),
                   blueprints: Sequence[str] = (), replicate: int = 0) -> ContractReport:
    """Run every contract check on one batch of ``replicate`` (CPU, a few forward passes)."""
    from esper_ab.episodes._training import IncubationHook

    name = config.name
    slots = tuple(slots) or (config.default_slot,)
    catalog = config.catalog
    names = tuple(dict.fromkeys([*(blueprints or catalog.names()), PLACEBO]))
    widths = check_slots_and_blueprints(config, slots, blueprints)
    first, second = _data(config, replicate), _data(config, replicate)
    for field_name in ("train_x", "train_y", "test_x", "test_y"):
        a, b = getattr(first, field_name), getattr(second, field_name)
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            raise ContractError(f"workload {name}: data is not deterministic per replicate: two "
                                f"builds of replicate {replicate} differ in {field_name}: draw "
                                "every random number from a generator seeded by the replicate")
    host = _host(config)
    x, y = first.train_x[:8], first.train_y[:8]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        acts = _call("its host's forward", name, "fix the host's forward(x, slot_hook)",
                     _activations, copy.deepcopy(host), x, slots)
    missing = [s for s in slots if s not in acts]
    if missing:
        raise ContractError(f"workload {name}: its host never calls slot_hook at slot "
                            f"{missing[0]!r}: call slot_hook(name, h) at every slot it lists")
    seeds: dict[str, list[nn.Module]] = {}
    for slot in slots:
        for bp in names:
            if not blueprints and bp != PLACEBO and \
                    catalog.misfit(bp, slot, widths[slot]) is not None:
                continue
            seed = _call(f"blueprint {bp}'s factory at slot {slot} (width {widths[slot]})",
                         name, "fix the factory or declare the slots / widths it fits",
                         catalog.build, bp, width=widths[slot],
                         generator=torch.Generator().manual_seed(1))
            h = acts[slot]
            s = _call(f"blueprint {bp} at slot {slot}", name,
                      "a seed must map h to s of h's shape", seed, h)
            if not isinstance(s, Tensor) or s.shape != h.shape:
                raise ContractError(f"workload {name}: blueprint {bp} at slot {slot} maps h of "
                                    f"shape {tuple(h.shape)} to {getattr(s, 'shape', type(s))}: "
                                    "a seed must return a tensor of h's shape")
            seeds.setdefault(slot, []).append(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plain = copy.deepcopy(host)(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hooked = copy.deepcopy(host)(x, IncubationHook(seeds))
    if not isinstance(plain, Tensor) or not isinstance(hooked, Tensor) \
            or plain.shape != hooked.shape or not torch.equal(plain, hooked.detach()):
        raise ContractError(f"workload {name}: the host is not bit-identical while seeds "
                            f"incubate (its output on one batch changes at alpha 0): continue "
                            "with exactly what slot_hook returns, and make forward deterministic "
                            "under a fixed torch seed")
    loss = _call("its loss", name, "fix the workload's loss(logits, y)",
                 config.plugin.loss, plain, y)
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not torch.isfinite(loss):
        raise ContractError(f"workload {name}: its loss on one batch is {loss!r:.60}, not a "
                            "finite scalar tensor: return the mean loss of the batch")
    plugin = config.plugin
    n_correct, n_scored = _call("its accuracy", name, "fix the workload's accuracy(logits, y)",
                                plugin.counts, plain, y)
    flags = _call("its correct", name, "fix the workload's correct(logits, y)",
                  plugin.flags, plain, y)
    if (int(flags.sum()), flags.numel()) != (int(n_correct), int(n_scored)):
        raise ContractError(f"workload {name}: on one batch its correct() marks "
                            f"{int(flags.sum())} of {flags.numel()} targets correct but its "
                            f"accuracy() counts {int(n_correct)} of {int(n_scored)}: make them "
                            "agree (one bool per scored target; accuracy = their mean)")
    built = tuple(dict.fromkeys(m.blueprint for ms in seeds.values() for m in ms))
    return ContractReport(name, slots, widths, built, int(first.train_x.shape[0]),
                          int(first.test_x.shape[0]))
