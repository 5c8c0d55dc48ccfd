"""Per-seed feeds of the plug-in, and the per-model table that holds them.

- :class:`SlotFeed`: one seed's ``GateTracker`` and collector; its epoch clock is esper-lite's
  own ``state.metrics.epochs_in_current_stage``.
- :class:`ModelFeeds`: the feeds of one model (one environment), keyed by slot, with what
  Simic's EMA holds for each slot (see :meth:`ModelFeeds.ema_start`). One plug-in keeps one
  table per model, so models sharing a plug-in never see each other's seeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from esper_ab.errors import bad_value
from esper_ab.gate import Gate, GateDecision
from esper_ab.integrations.esper_lite._measure import (
    Float64Collector,
    KasminaCollector,
    typed,
)

Path = Literal["kasmina", "simic"]
PATHS: tuple[str, ...] = ("kasmina", "simic")


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
        """Close tracker epochs up to esper-lite's count; the pending steps go in the first.
        An epoch in which esper-lite did not measure (its stride) is closed without steps:
        the tracker then judges the last measured epoch, as esper-lite keeps its last ratio."""
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
        """The decision at the latest epoch (ADVANCE semantics; an unmeasured epoch is
        judged by the last measured one)."""
        if epochs_in_stage is not None:
            self.sync(epochs_in_stage)
        return self.tracker.now()


@dataclass
class ModelFeeds:
    """The feeds of one model, and the state of Simic's per-slot EMA.

    Simic's ``gradient_ratio_ema`` is set to 0.0 for every slot at an episode's reset
    (``ParallelEnvState.reset_episode_state``) and dropped for a slot that holds no active
    seed at an epoch's end (``action_execution.py``, after ``step_epoch``); a dropped EMA
    restarts from the seed's first ratio (``vectorized_trainer.py``: ``prev_ema is None``).
    So a seed's EMA starts from 0.0 only when its slot has not been empty at any epoch's end
    since the episode began.
    """

    feeds: dict[str, SlotFeed] = field(default_factory=dict)
    ema_dropped: set[str] = field(default_factory=set)

    def new_episode(self) -> None:
        self.feeds.clear()
        self.ema_dropped.clear()

    def ema_start(self, slot_id: str) -> Literal["zero", "first_ratio"]:
        return "first_ratio" if slot_id in self.ema_dropped else "zero"
