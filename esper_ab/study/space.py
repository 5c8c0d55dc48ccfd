"""From a ``SweepSpec`` to an Optuna search space, and from sampled values to ``TrialParams``.

The space is conditional: the strategy is a categorical choice, and each strategy's own
parameters and threshold are only sampled when it is chosen. It is written define-by-run
(a function of an Optuna trial), the form ``OptunaSearch(space=...)`` accepts. Flat
parameter names::

    strategy                 the strategy's name
    <strategy>.threshold     its threshold (each strategy has its own scale)
    <strategy>.<param>       its parameters
    gate.window, gate.ema_decay, gate.min_epochs

Fixed values are returned as constants, so every trial's config holds every name it needs.
The grid sampler enumerates the same names (``grid_points``).

Stratified by strategy (``sampler.stratify``, the default): trial number n tries strategy
n mod S, so each of the S strategies gets the same share of trials whatever the sampler
prefers, and the sampler only searches within that strategy's own names (their histories
hold only that strategy's trials, since every name is prefixed by it). The strategy is then
a constant of the config (and an Optuna user attribute), not a sampled parameter.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from esper_ab.errors import ConfigError
from esper_ab.strategies import ParamSpec, strategy_class
from esper_ab.study.spec import DECLARED, Choices, Range, SweepSpec
from esper_ab.trial import TrialParams

__all__ = ["DefineByRun", "define_by_run", "grid_points", "params_from_flat", "space_summary"]

_GATE_KEYS = ("window", "ema_decay", "min_epochs")


def _declared(spec: ParamSpec) -> Range | Choices:
    if spec.kind in ("float", "int"):
        return Range(low=spec.low, high=spec.high, log=spec.log)
    return Choices(choices=list(spec.choices or (True, False)))


def _entries(spec: SweepSpec) -> dict[str, dict[str, tuple[ParamSpec | None, Any]]]:
    """strategy -> flat name -> (ParamSpec or None for gate keys, searchable value)."""
    out: dict[str, dict[str, tuple[ParamSpec | None, Any]]] = {}
    for entry in spec.strategies:
        cls = strategy_class(entry.name)
        items: dict[str, tuple[ParamSpec | None, Any]] = {}
        for p in cls.PARAMS:
            value = entry.params.get(p.name, p.default)
            items[f"{entry.name}.{p.name}"] = (p, _declared(p) if value == DECLARED else value)
        thr = entry.threshold
        items[f"{entry.name}.threshold"] = (cls.THRESHOLD,
                                            _declared(cls.THRESHOLD) if thr == DECLARED else thr)
        out[entry.name] = items
    return out


def _gate_items(spec: SweepSpec) -> dict[str, Any]:
    gate = spec.gate
    return {f"gate.{k}": (Choices(choices=list(getattr(gate, k)))
                          if isinstance(getattr(gate, k), list) else getattr(gate, k))
            for k in _GATE_KEYS}


def _suggest(trial: Any, name: str, param: ParamSpec | None, value: Any) -> Any:
    if isinstance(value, Range):
        integer = param is not None and param.kind == "int"
        if integer:
            step = int(value.step) if value.step else 1
            return trial.suggest_int(name, int(value.low), int(value.high),
                                     log=value.log, step=step)
        return trial.suggest_float(name, value.low, value.high, log=value.log,
                                   step=None if value.log else value.step)
    if isinstance(value, Choices):
        return trial.suggest_categorical(name, list(value.choices))
    return value


class DefineByRun:
    """The define-by-run space: ``space(optuna_trial) -> constants``. Sampled names are
    captured by Optuna; fixed ones are returned. A class, not a closure, so that Tune can
    pickle the searcher into its experiment checkpoint."""

    def __init__(self, spec: SweepSpec) -> None:
        self.strategies = _entries(spec)
        self.gate = _gate_items(spec)
        self.names = list(self.strategies)
        self.stratify = spec.sampler.stratify and spec.sampler.kind != "grid"

    def strategy_of(self, number: int) -> str:
        """The strategy trial ``number`` tries when the search is stratified."""
        return self.names[number % len(self.names)]

    def __call__(self, trial: Any) -> dict[str, Any]:
        fixed: dict[str, Any] = {}
        if len(self.names) == 1:
            chosen = fixed["strategy"] = self.names[0]
        elif self.stratify:
            chosen = fixed["strategy"] = self.strategy_of(trial.number)
            trial.set_user_attr("strategy", chosen)
        else:
            chosen = trial.suggest_categorical("strategy", self.names)
        items = {**self.strategies[chosen], **{k: (None, v) for k, v in self.gate.items()}}
        for name, (param, value) in items.items():
            if isinstance(value, Range | Choices):
                _suggest(trial, name, param, value)
            else:
                fixed[name] = value
        return fixed


def define_by_run(spec: SweepSpec) -> Callable[[Any], dict[str, Any]]:
    """The spec's conditional space as a picklable define-by-run callable."""
    return DefineByRun(spec)


def _values(param: ParamSpec | None, value: Any) -> list[Any]:
    if isinstance(value, Range):
        return value.grid(integer=param is not None and param.kind == "int")
    if isinstance(value, Choices):
        return list(value.choices)
    return [value]


def grid_points(spec: SweepSpec, *, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every point of the grid (ranges at ``grid_points`` or ``step`` spacing)."""
    points: list[dict[str, Any]] = []
    gate = _gate_items(spec)
    for strategy, items in _entries(spec).items():
        all_items = {**items, **{k: (None, v) for k, v in gate.items()}}
        keys = list(all_items)
        axes = [_values(*all_items[k]) for k in keys]
        for combo in itertools.product(*axes):
            points.append({"strategy": strategy, **dict(zip(keys, combo, strict=True))})
            if len(points) > limit:
                raise ConfigError(f"the grid of sweep {spec.name!r} has more than {limit} "
                                  "points: lower grid_points / widen step, or use tpe")
    return points


def params_from_flat(flat: Mapping[str, Any], spec: SweepSpec) -> TrialParams:
    """``TrialParams`` from a trial's flat config (unknown names are ignored)."""
    strategy = flat.get("strategy")
    if strategy is None and len(spec.strategies) == 1:
        strategy = spec.strategies[0].name
    if strategy not in {s.name for s in spec.strategies}:
        raise ConfigError(f"trial config strategy={strategy!r} is not in sweep {spec.name!r}: "
                          f"use one of {[s.name for s in spec.strategies]}")
    prefix = f"{strategy}."
    params = {k[len(prefix):]: v for k, v in flat.items()
              if k.startswith(prefix) and k != f"{strategy}.threshold"}
    gate = spec.gate
    return TrialParams(
        strategy=strategy, strategy_params=params,
        threshold=float(flat[f"{strategy}.threshold"]),
        window=flat.get("gate.window", gate.window),
        ema_decay=flat.get("gate.ema_decay", gate.ema_decay),
        min_epochs=int(flat.get("gate.min_epochs", gate.min_epochs)),
        clamp=gate.clamp, fail_dead_seeds=gate.fail_dead_seeds)


def space_summary(spec: SweepSpec) -> dict[str, Any]:
    """The search space as plain data (logged on the parent run and shown by validate)."""

    def show(value: Any) -> Any:
        if isinstance(value, Range | Choices):
            return value.model_dump(exclude_defaults=True)
        return value

    out: dict[str, Any] = {"strategy": [s.name for s in spec.strategies]}
    for items in _entries(spec).values():
        out.update({k: show(v) for k, (_, v) in items.items()})
    out.update({k: show(v) for k, v in _gate_items(spec).items()})
    return out
