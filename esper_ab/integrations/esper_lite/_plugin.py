"""The plug-in: esper-ab's exported gate in place of esper-lite's G2 gradient-ratio check.

esper-lite's only hook for another gate is ``SeedSlot.gates``, a public ``QualityGates``
whose ``_check_g2(state)`` a subclass may override. :class:`EsperLiteG2` holds the gate and
one :class:`SlotFeed` (a ``GateTracker`` plus a collector) per slot:

- ``on_step`` after ``backward()`` and before clipping, where esper-lite measures;
- the epoch clock is esper-lite's own ``state.metrics.epochs_in_current_stage`` (it ticks in
  ``record_accuracy``, after the epoch's steps): a feed closes one tracker epoch per tick;
- ``check_g2(state, result)`` amends esper-lite's G2 result: its gradient-ratio checks are
  replaced by the esper-ab decision *now* (ADVANCE semantics: the latest epoch is judged, an
  earlier passing epoch does not count); the other checks stay (``others="keep"``) or go.

:meth:`EsperLiteG2.install` wires all of it into a ``MorphogeneticModel`` by duck typing:
it swaps each slot's ``gates`` for a subclass of its own class and wraps the slot's gradient
capture and ``step_epoch``. Nothing here imports esper-lite.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Literal

from torch import nn

from esper_ab.errors import ConfigError, bad_value
from esper_ab.gate import Gate, GateDecision, build_gate
from esper_ab.integrations.esper_lite._measure import (
    Float64Collector,
    KasminaCollector,
    typed,
)

Path = Literal["kasmina", "simic"]
PATHS: tuple[str, ...] = ("kasmina", "simic")
RATIO_CHECK = re.compile(r"^(seed_gradient_(active|low)_|gradient_stats_never_measured$)")


def kasmina_param_lists(model: Any, slot_id: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The lists Kasmina's ``GradientHealthMonitor.register(host, seed)`` keeps: the
    ``requires_grad`` parameters of ``model.host`` and of the slot's seed module."""
    seed = model.seed_slots[slot_id].seed
    return ([p for p in model.host.parameters() if p.requires_grad],
            [p for p in seed.parameters() if p.requires_grad])


def simic_param_lists(model: Any, slot_id: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The lists Simic's batch telemetry passes: ``model.get_host_parameters()`` (the backbone
    without any slot) and ``model.get_seed_parameters(slot_id)``; tensors without a gradient
    are dropped at each measurement."""
    return list(model.get_host_parameters()), list(model.get_seed_parameters(slot_id))


class SlotFeed:
    """One seed's tracker and collector; the epoch clock is esper-lite's stage counter."""

    def __init__(self, gate: Gate, *, seed_id: str, blueprint: str | None,
                 host_params: Iterable[nn.Parameter], seed_params: Iterable[nn.Parameter],
                 path: Path = "kasmina", host_module: nn.Module | None = None,
                 seed_module: nn.Module | None = None):
        if path not in PATHS:
            raise bad_value("path", path, f"use one of {list(PATHS)}")
        groups = {"host": typed(host_params, host_module), "seed": typed(seed_params, seed_module)}
        self.collector = Float64Collector(groups) if path == "simic" else KasminaCollector(groups)
        self.seed_id = seed_id
        self.tracker = gate.tracker(blueprint)
        self.epochs = 0                # tracker epochs closed (= esper-lite ticks seen)
        self._pending: list[Any] = []

    def sync(self, epochs_in_stage: int) -> None:
        """Close tracker epochs up to esper-lite's count; the pending steps go in the first."""
        while self.epochs < epochs_in_stage:
            steps = self.collector.materialize(self._pending) if self._pending else []
            self._pending = []
            for s in steps:
                self.tracker.observe_step(s["seed"], s["host"])
            self.tracker.end_epoch()
            self.epochs += 1

    def on_step(self, epochs_in_stage: int | None = None) -> None:
        """Measure the current gradients (after ``backward()``, before clipping)."""
        if epochs_in_stage is not None:
            self.sync(epochs_in_stage)
        self._pending.append(self.collector.collect())

    def on_epoch_end(self, epochs_in_stage: int | None = None) -> GateDecision:
        """Close the epoch (to ``epochs_in_stage``, or one more) and return the decision now."""
        self.sync(self.epochs + 1 if epochs_in_stage is None else epochs_in_stage)
        return self.tracker.now()

    def decision(self, epochs_in_stage: int | None = None) -> GateDecision:
        """The decision at the latest epoch (ADVANCE semantics)."""
        if epochs_in_stage is not None:
            self.sync(epochs_in_stage)
        return self.tracker.now()


def _stage_name(state: Any) -> str:
    stage = getattr(state, "stage", None)
    return getattr(stage, "name", str(stage))


def _epochs(state: Any) -> int:
    return int(state.metrics.epochs_in_current_stage)


class EsperLiteG2:
    """An esper-ab gate deciding esper-lite's G2, for every slot of one model."""

    def __init__(self, gate: Gate | str | os.PathLike[str], *, path: Path = "kasmina",
                 others: Literal["keep", "drop"] = "keep"):
        if path not in PATHS:
            raise bad_value("path", path, f"use one of {list(PATHS)}")
        if others not in ("keep", "drop"):
            raise bad_value("others", others, "use 'keep' (esper-lite's other G2 checks stay) "
                            "or 'drop' (the esper-ab decision alone)")
        self.gate = gate if isinstance(gate, Gate) else build_gate(os.fspath(gate))
        self.path, self.others = path, others
        self.feeds: dict[str, SlotFeed] = {}
        self._slots_used: set[str] = set()
        self._classes: dict[type, type] = {}

    # -- explicit hooks (no esper-lite needed) -------------------------------------
    def start_episode(self) -> None:
        """A new episode: each slot's next seed is again its first (Simic's EMA from 0)."""
        self.feeds.clear()
        self._slots_used.clear()

    def start_seed(self, slot_id: str, seed_id: str, blueprint: str | None, *,
                   host_params: Iterable[nn.Parameter], seed_params: Iterable[nn.Parameter],
                   host_module: nn.Module | None = None,
                   seed_module: nn.Module | None = None) -> SlotFeed:
        """Track a seed that has just entered TRAINING in ``slot_id``."""
        gate = self.gate
        ema_start = getattr(gate.config, "ema_start", None)
        if ema_start is not None and slot_id in self._slots_used:
            # Simic starts the EMA at 0.0 only for a slot's first seed of an episode.
            gate = Gate(replace(gate.config, ema_start=None), strategy=gate.strategy)
        self._slots_used.add(slot_id)
        feed = SlotFeed(gate, seed_id=seed_id, blueprint=blueprint, host_params=host_params,
                        seed_params=seed_params, path=self.path, host_module=host_module,
                        seed_module=seed_module)
        self.feeds[slot_id] = feed
        return feed

    def feed_for(self, state: Any) -> SlotFeed | None:
        feed = self.feeds.get(getattr(state, "slot_id", None))
        return feed if feed is not None and feed.seed_id == state.seed_id else None

    # -- the G2 check ----------------------------------------------------------------
    def check_g2(self, state: Any, result: Any) -> Any:
        """esper-lite's G2 ``result`` (a GateResult dataclass) with the esper-ab decision in
        place of the gradient-ratio checks; fails closed when the seed was never tracked."""
        ok = [c for c in result.checks_passed if self.others == "keep" and not RATIO_CHECK.match(c)]
        bad = [c for c in result.checks_failed if self.others == "keep" and not RATIO_CHECK.match(c)]
        feed = self.feed_for(state)
        if feed is None:
            bad.append("esper_ab_seed_not_tracked")
            msg = "esper-ab gate: no measurements for this seed (hooks not wired?)"
        else:
            d = feed.decision(_epochs(state))
            value = "unmeasured" if d.value is None else f"{d.value:.4g}"
            if d.passed:
                ok.append(f"esper_ab_g2_pass_{value}")
            else:
                bad.extend(f"esper_ab_g2_{c.name}_failed_{value}" for c in d.failed_checks)
            msg = (f"esper-ab gate {self.gate.config.strategy} at epoch {d.epochs_observed}: "
                   f"{'PASS' if d.passed else 'FAIL'} ({d.reason})")
        message = f"{result.message}; {msg}" if result.message else msg
        fields = {"passed": not bad, "checks_passed": ok, "checks_failed": bad,
                  "message": message}
        if dataclasses.is_dataclass(result):
            return dataclasses.replace(result, **fields)
        for k, v in fields.items():
            setattr(result, k, v)
        return result

    def quality_gates(self, original: Any) -> Any:
        """A copy of esper-lite's ``QualityGates`` instance whose ``_check_g2`` is amended."""
        base = type(original)
        if getattr(base, "esper_ab_plugin", None) is self:
            return original                       # installed already
        if not callable(getattr(base, "_check_g2", None)):
            raise ConfigError(f"{base.__name__} has no _check_g2: pass esper-lite's "
                              "QualityGates (SeedSlot.gates)")
        cls = self._classes.get(base)
        if cls is None:
            plugin = self

            class EsperABQualityGates(base):  # type: ignore[misc, valid-type]
                esper_ab_plugin = plugin

                def _check_g2(self, state):
                    return plugin.check_g2(state, super()._check_g2(state))

            cls = self._classes[base] = EsperABQualityGates
        gates = base.__new__(cls)
        gates.__dict__.update(vars(original))
        return gates

    # -- model-level hooks, for a training loop that does not call the slot's capture ----
    def step(self, model: Any) -> None:
        """After ``backward()``, before clipping: measure every slot with a TRAINING seed."""
        for slot_id, slot in model.seed_slots.items():
            feed = self._live_feed(model, slot_id, slot)
            if feed is not None:
                feed.on_step(_epochs(slot.state))

    def epoch(self, model: Any) -> None:
        """After esper-lite's ``record_accuracy``: close the epoch of every tracked seed."""
        for slot in model.seed_slots.values():
            state = getattr(slot, "state", None)
            feed = self.feed_for(state) if state is not None else None
            if feed is not None and _stage_name(state) == "TRAINING":
                feed.sync(_epochs(state))

    # -- wiring into a MorphogeneticModel (duck-typed) -------------------------------------
    def install(self, model: Any) -> None:
        """Swap every slot's gates and wrap its gradient capture and ``step_epoch``."""
        slots = getattr(model, "seed_slots", None)
        if slots is None:
            raise ConfigError(f"{type(model).__name__} has no seed_slots: pass esper-lite's "
                              "MorphogeneticModel")
        for slot_id, slot in slots.items():
            if getattr(type(slot.gates), "esper_ab_plugin", None) is self:
                continue                              # installed already
            slot.gates = self.quality_gates(slot.gates)
            for name in ("capture_gradient_telemetry", "capture_gradient_telemetry_async"):
                if callable(getattr(slot, name, None)):
                    setattr(slot, name, self._wrap_step(model, slot_id, slot, getattr(slot, name)))
            slot.step_epoch = self._wrap_epoch(slot, slot.step_epoch)

    def _live_feed(self, model: Any, slot_id: str, slot: Any) -> SlotFeed | None:
        state = getattr(slot, "state", None)
        if state is None or _stage_name(state) != "TRAINING":
            return None
        feed = self.feed_for(state)
        if feed is None:
            lists = simic_param_lists if self.path == "simic" else kasmina_param_lists
            host, seed = lists(model, slot_id)
            feed = self.start_seed(slot_id, state.seed_id, getattr(state, "blueprint_id", None),
                                   host_params=host, seed_params=seed, host_module=model.host,
                                   seed_module=slot.seed)
        return feed

    def _wrap_step(self, model: Any, slot_id: str, slot: Any, original: Any) -> Any:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            feed = self._live_feed(model, slot_id, slot)
            if feed is not None:
                feed.on_step(_epochs(slot.state))
            return original(*args, **kwargs)
        return hooked

    def _wrap_epoch(self, slot: Any, original: Any) -> Any:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            state = getattr(slot, "state", None)
            feed = self.feed_for(state) if state is not None else None
            if feed is not None and _stage_name(state) == "TRAINING":
                feed.sync(_epochs(state))
            return original(*args, **kwargs)
        return hooked
