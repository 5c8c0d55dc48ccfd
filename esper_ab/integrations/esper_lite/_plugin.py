"""The plug-in: esper-ab's exported gate in place of esper-lite's G2 gradient-ratio check.

esper-lite's only hook for another gate is ``SeedSlot.gates``, a public ``QualityGates``
whose ``_check_g2(state)`` a subclass may override. :class:`EsperLiteG2` holds the gate and,
for every model it is installed in (one per environment in vectorized PPO), one
:class:`~esper_ab.integrations.esper_lite._feeds.ModelFeeds`: a :class:`SlotFeed` (a
``GateTracker`` plus a collector) per slot. Models never share feeds.

- ``on_step`` after ``backward()`` and before clipping, where esper-lite measures, and only
  there: at esper-lite's ``gradient_telemetry_stride`` the hooked capture runs on measured
  epochs (heuristic) or batches (PPO) only;
- the epoch clock is esper-lite's own ``state.metrics.epochs_in_current_stage`` (it ticks in
  ``record_accuracy``, after the epoch's steps): a feed closes one tracker epoch per tick;
- ``check_g2(state, result)`` amends esper-lite's G2 result: its gradient-ratio checks are
  replaced by the esper-ab decision *now* (ADVANCE semantics; an epoch esper-lite did not
  measure is judged by the last measured one, as esper-lite keeps its last ratio); the other
  checks stay (``others="keep"``) or go. The result names the gate
  (``esper_ab_gate_<name>``) and carries its value (``esper_ab_g2_pass_<value>`` or
  ``esper_ab_g2_<check>_failed_<value>``), so esper-lite's own telemetry records both and
  ``esper-ab ingest`` labels the run by the gate.

:meth:`EsperLiteG2.install` wires all of it into a ``MorphogeneticModel`` by duck typing.
Nothing here imports esper-lite.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Any, Literal

from torch import nn

from esper_ab.errors import ConfigError, bad_value
from esper_ab.gate import PRESETS, Gate, build_gate
from esper_ab.integrations.esper_lite._feeds import (
    PATHS,
    ModelFeeds,
    Path,
    SlotFeed,
    kasmina_param_lists,
    simic_param_lists,
)

RATIO_CHECK = re.compile(r"^(seed_gradient_(active|low)_|gradient_stats_never_measured$)")
GATE_CHECK = "esper_ab_gate_"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class PermissiveGatesWarning(UserWarning):
    """The plug-in was installed on permissive gates, where its decision has no effect."""


def _stage_name(state: Any) -> str:
    stage = getattr(state, "stage", None)
    return getattr(stage, "name", str(stage))


def _epochs(state: Any) -> int:
    return int(state.metrics.epochs_in_current_stage)


def _value(v: float | None) -> str:
    return "unmeasured" if v is None else f"{v:.9g}"


def _label(spec: Any, gate: Gate, name: str | None) -> str:
    if name is None:
        if isinstance(spec, str) and spec in PRESETS:
            name = spec
        elif isinstance(spec, str | os.PathLike):
            name = FsPath(os.fspath(spec)).stem
        else:
            name = gate.config.strategy
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "gate"
    if not _NAME.match(name):
        raise bad_value("name", name, "use 1-64 letters, digits, '_', '.' or '-'")
    return name


class EsperLiteG2:
    """An esper-ab gate deciding esper-lite's G2, for every slot of any number of models."""

    def __init__(self, gate: Gate | str | os.PathLike[str], *, path: Path = "kasmina",
                 others: Literal["keep", "drop"] = "keep", name: str | None = None):
        if path not in PATHS:
            raise bad_value("path", path, f"use one of {list(PATHS)}")
        if others not in ("keep", "drop"):
            raise bad_value("others", others, "use 'keep' (esper-lite's other G2 checks stay) "
                            "or 'drop' (the esper-ab decision alone)")
        self.gate = gate if isinstance(gate, Gate) else build_gate(os.fspath(gate))
        self.name = _label(gate, self.gate, name)
        self.path, self.others = path, others
        self._models: weakref.WeakKeyDictionary[Any, ModelFeeds] = weakref.WeakKeyDictionary()
        self._loose = ModelFeeds()          # the explicit hooks used without a model
        self._classes: dict[type, type] = {}
        self._warned_permissive = False

    # -- per-model tables ------------------------------------------------------------
    def _table(self, model: Any = None) -> ModelFeeds:
        if model is None:
            return self._loose
        table = self._models.get(model)
        if table is None:
            table = self._models[model] = ModelFeeds()
        return table

    def feeds_of(self, model: Any = None) -> dict[str, SlotFeed]:
        """The feeds (slot id -> SlotFeed) of one model (``None``: the explicit hooks')."""
        return self._table(model).feeds

    @property
    def feeds(self) -> dict[str, SlotFeed]:
        """The feeds of the only model this plug-in serves; several models: use
        :meth:`feeds_of`."""
        tables = [t for t in self._models.values()] + ([self._loose] if self._loose.feeds
                                                        or not self._models else [])
        if len(tables) > 1:
            raise ConfigError(f"this plug-in serves {len(tables)} models: read one model's "
                              "feeds with plugin.feeds_of(model)")
        return tables[0].feeds

    # -- explicit hooks (no esper-lite needed) -------------------------------------
    def start_episode(self, model: Any = None) -> None:
        """A new episode of ``model`` (``None``: of every model): its feeds are dropped and
        Simic's EMA stands at 0.0 for each of its slots again."""
        tables = [self._table(model)] if model is not None else [self._loose,
                                                                 *self._models.values()]
        for t in tables:
            t.new_episode()

    def slot_emptied(self, slot_id: str, model: Any = None) -> None:
        """``slot_id`` held no active seed at an epoch's end: Simic drops its EMA, so the next
        seed there starts from its first ratio. ``install`` calls this by itself."""
        self._table(model).ema_dropped.add(slot_id)

    def start_seed(self, slot_id: str, seed_id: str, blueprint: str | None, *,
                   host_params: Iterable[nn.Parameter], seed_params: Iterable[nn.Parameter],
                   host_module: nn.Module | None = None,
                   seed_module: nn.Module | None = None, model: Any = None) -> SlotFeed:
        """Track a seed that has just entered TRAINING in ``slot_id`` of ``model``."""
        table = self._table(model)
        gate = self.gate
        if gate.config.ema_start is not None and table.ema_start(slot_id) == "first_ratio":
            gate = Gate(dataclasses.replace(gate.config, ema_start=None), strategy=gate.strategy)
        feed = SlotFeed(gate, seed_id=seed_id, blueprint=blueprint, host_params=host_params,
                        seed_params=seed_params, path=self.path, host_module=host_module,
                        seed_module=seed_module)
        table.feeds[slot_id] = feed
        return feed

    def feed_for(self, state: Any, model: Any = None) -> SlotFeed | None:
        feed = self._table(model).feeds.get(getattr(state, "slot_id", None))
        return feed if feed is not None and feed.seed_id == state.seed_id else None

    # -- the G2 check ----------------------------------------------------------------
    def check_g2(self, state: Any, result: Any, model: Any = None) -> Any:
        """esper-lite's G2 ``result`` (a GateResult dataclass) with the esper-ab decision in
        place of the gradient-ratio checks; fails closed when the seed was never tracked."""
        ok = [c for c in result.checks_passed if self.others == "keep" and not RATIO_CHECK.match(c)]
        bad = [c for c in result.checks_failed if self.others == "keep" and not RATIO_CHECK.match(c)]
        feed = self.feed_for(state, model)
        if feed is None and model is not None:
            slots = getattr(model, "seed_slots", {})
            slot = slots[state.slot_id] if state.slot_id in slots else None
            if slot is not None and getattr(slot, "state", None) is state:
                feed = self._live_feed(model, state.slot_id, slot)
        if feed is None:
            bad.append("esper_ab_seed_not_tracked")
            msg = "esper-ab gate: no measurements for this seed (hooks not wired?)"
        else:
            d = feed.decision(_epochs(state))
            if d.passed:
                ok.append(f"esper_ab_g2_pass_{_value(d.value)}")
            else:
                bad.extend(f"esper_ab_g2_{c.name}_failed_{_value(d.value)}"
                           for c in d.failed_checks)
            msg = (f"esper-ab gate {self.name} at epoch {d.epochs_observed}: "
                   f"{'PASS' if d.passed else 'FAIL'} ({d.reason})")
        ok.append(GATE_CHECK + self.name)
        message = f"{result.message}; {msg}" if result.message else msg
        fields = {"passed": not bad, "checks_passed": ok, "checks_failed": bad,
                  "message": message}
        if dataclasses.is_dataclass(result):
            return dataclasses.replace(result, **fields)
        for k, v in fields.items():
            setattr(result, k, v)
        return result

    def quality_gates(self, original: Any, model: Any = None) -> Any:
        """A copy of esper-lite's ``QualityGates`` instance whose ``_check_g2`` is amended
        (for the seeds of ``model``)."""
        base = type(original)
        owner = getattr(base, "esper_ab_plugin", None)
        if owner is self:
            return original                       # installed already
        if owner is not None:
            raise ConfigError("these gates carry another EsperLiteG2 already: install one "
                              "plug-in per model")
        if not callable(getattr(base, "_check_g2", None)):
            raise ConfigError(f"{base.__name__} has no _check_g2: pass esper-lite's "
                              "QualityGates (SeedSlot.gates)")
        cls = self._classes.get(base)
        if cls is None:
            plugin = self

            class EsperABQualityGates(base):  # type: ignore[misc, valid-type]
                esper_ab_plugin = plugin

                def _check_g2(self, state):
                    ref = self.__dict__.get("_esper_ab_model")
                    return plugin.check_g2(state, super()._check_g2(state),
                                           ref() if ref is not None else None)

            cls = self._classes[base] = EsperABQualityGates
        gates = base.__new__(cls)
        gates.__dict__.update(vars(original))
        gates.__dict__["_esper_ab_model"] = weakref.ref(model) if model is not None else None
        return gates

    # -- model-level hooks, for a training loop that does not call the slot's capture ----
    def step(self, model: Any) -> None:
        """After ``backward()``, before clipping, on a batch esper-lite measures: measure
        every slot of ``model`` with a TRAINING seed."""
        for slot_id, slot in model.seed_slots.items():
            feed = self._live_feed(model, slot_id, slot)
            if feed is not None:
                feed.on_step(_epochs(slot.state))

    def epoch(self, model: Any) -> None:
        """After esper-lite's ``record_accuracy``: close the epoch of every tracked seed of
        ``model``, and note the slots that hold no seed (Simic drops their EMA)."""
        for slot_id, slot in model.seed_slots.items():
            self._close_epoch(model, slot_id, slot)
            if not _occupied(slot):
                self.slot_emptied(slot_id, model)

    # -- wiring into a MorphogeneticModel (duck-typed) -------------------------------------
    def install(self, model: Any) -> None:
        """Swap every slot's gates and wrap its gradient capture and ``step_epoch``.
        Idempotent; one plug-in may be installed in any number of models."""
        slots = getattr(model, "seed_slots", None)
        if slots is None:
            raise ConfigError(f"{type(model).__name__} has no seed_slots: pass esper-lite's "
                              "MorphogeneticModel")
        self._table(model)
        for slot_id, slot in slots.items():
            if getattr(type(slot.gates), "esper_ab_plugin", None) is self:
                continue                              # installed already
            self._warn_if_permissive(slot.gates)
            slot.gates = self.quality_gates(slot.gates, model)
            for name in ("capture_gradient_telemetry", "capture_gradient_telemetry_async"):
                if callable(getattr(slot, name, None)):
                    setattr(slot, name, self._wrap_step(model, slot_id, slot, getattr(slot, name)))
            slot.step_epoch = self._wrap_epoch(model, slot_id, slot, slot.step_epoch)

    def _warn_if_permissive(self, gates: Any) -> None:
        if getattr(gates, "permissive", False) is True and not self._warned_permissive:
            self._warned_permissive = True
            warnings.warn(
                "esper-ab gate installed on permissive gates (create_model's default "
                "permissive_gates=True): permissive G2 has no gradient-ratio check, and its "
                "own gradient_health check fails every seed on the heuristic path, so this "
                "gate's decision has no effect; create the model with permissive_gates=False",
                PermissiveGatesWarning, stacklevel=3)

    def _live_feed(self, model: Any, slot_id: str, slot: Any) -> SlotFeed | None:
        state = getattr(slot, "state", None)
        if state is None or _stage_name(state) != "TRAINING":
            return None
        feed = self.feed_for(state, model)
        if feed is None:
            lists = simic_param_lists if self.path == "simic" else kasmina_param_lists
            host, seed = lists(model, slot_id)
            feed = self.start_seed(slot_id, state.seed_id, getattr(state, "blueprint_id", None),
                                   host_params=host, seed_params=seed, host_module=model.host,
                                   seed_module=slot.seed, model=model)
        return feed

    def _close_epoch(self, model: Any, slot_id: str, slot: Any) -> None:
        state = getattr(slot, "state", None)
        feed = self.feed_for(state, model) if state is not None else None
        if feed is not None and _stage_name(state) == "TRAINING":
            feed.sync(_epochs(state))

    def _wrap_step(self, model: Any, slot_id: str, slot: Any, original: Any) -> Any:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            feed = self._live_feed(model, slot_id, slot)
            if feed is not None:
                feed.on_step(_epochs(slot.state))
            return original(*args, **kwargs)
        return hooked

    def _wrap_epoch(self, model: Any, slot_id: str, slot: Any, original: Any) -> Any:
        ref = weakref.ref(model)

        def hooked(*args: Any, **kwargs: Any) -> Any:
            m = ref()
            if m is not None:
                self._close_epoch(m, slot_id, slot)
            out = original(*args, **kwargs)
            if m is not None and not _occupied(slot):
                self.slot_emptied(slot_id, m)
            return out
        return hooked


def _occupied(slot: Any) -> bool:
    """esper-lite's ``SeedSlot.is_active``: a seed module and a state."""
    return getattr(slot, "seed", None) is not None and getattr(slot, "state", None) is not None
