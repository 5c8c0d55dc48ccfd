"""The online gate for one seed: the same decision core as replay, fed step by step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from esper_ab.gate._config import DecisionArrays, GateDecision, StepMeasurement
from esper_ab.gradients import GradStats
from esper_ab.strategies import UNMEASURED, VALUE, ContextBatch, StatsBatch

if TYPE_CHECKING:
    from esper_ab.gate._core import Gate

def _step_batch(steps: Sequence[StepMeasurement], blueprint: str | None):
    def opt(vals: list[float | None]) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in vals], dtype=np.float64)

    ctx = ContextBatch(blueprint=np.array([blueprint] * len(steps), dtype=object),
                       first_order=opt([s.first_order for s in steps]),
                       grad_out_norm=opt([s.grad_out_norm for s in steps]),
                       delta_norm=opt([s.delta_norm for s in steps]))
    return (StatsBatch.from_stats([s.seed for s in steps]),
            StatsBatch.from_stats([s.host for s in steps]), ctx)


class GateTracker:
    """The online gate for one seed: feed steps, close epochs, read decisions."""

    def __init__(self, gate: Gate, blueprint: str | None):
        self.gate = gate
        self.blueprint = blueprint
        self._epochs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending: list[StepMeasurement] = []
        self._decision: GateDecision | None = None

    def observe_step(self, seed: GradStats, host: GradStats, *, first_order: float | None = None,
                     grad_out_norm: float | None = None,
                     delta_norm: float | None = None) -> None:
        self._pending.append(StepMeasurement(seed, host, first_order, grad_out_norm, delta_norm))

    def end_epoch(self) -> GateDecision:
        steps, self._pending = self._pending, []
        return self.observe_epoch(steps)

    def observe_epoch(self, steps: Sequence[StepMeasurement]) -> GateDecision:
        if steps:
            stat = self.gate.strategy.statistic_batch(*_step_batch(steps, self.blueprint))
            self._epochs.append((stat.value, stat.state, stat.reason))
        else:
            empty = np.zeros(0)
            self._epochs.append((empty, empty.astype(np.int8), empty.astype(np.int8)))
        self._decision = None
        return self.current()

    def _arrays(self) -> DecisionArrays:
        k = max([len(v) for v, _, _ in self._epochs] + [1])
        e = max(len(self._epochs), 1)
        value = np.full((1, e, k), np.nan)
        state = np.full((1, e, k), UNMEASURED, dtype=np.int8)
        reason = np.zeros((1, e, k), dtype=np.int8)
        mask = np.zeros((1, e, k), dtype=bool)
        for i, (v, s, r) in enumerate(self._epochs):
            n = len(v)
            value[0, i, :n], state[0, i, :n], reason[0, i, :n] = v, s, r
            mask[0, i, :n] = True
        thr = np.array([self.gate.threshold_for(self.blueprint)])
        return self.gate.decide_arrays(value, state, reason, mask, thr)

    def current(self) -> GateDecision:
        """The decision at the first passing epoch (else at the last epoch seen)."""
        if self._decision is None:
            self._decision = self.gate.decision_record(self._arrays(), 0, self.blueprint)
        return self._decision

    def now(self) -> GateDecision:
        """The decision judged at the latest epoch alone: esper-lite's ADVANCE semantics.

        esper-lite checks G2 when the policy issues ADVANCE, on the value it holds at that
        moment: an epoch that passed earlier and has since fallen below the threshold does
        not count. esper-lite measures only every ``gradient_telemetry_stride``-th epoch and
        keeps the last measured value in between, so an epoch without steps is judged by the
        last epoch that had steps (its value, state and reason); ``min_epochs`` counts every
        epoch. An EMA carried over epochs without steps is judged as it stands.
        """
        e = len(self._epochs)
        if e == 0:
            return self.current()
        a = self._arrays()
        last = e - 1
        src = next((i for i in range(last, -1, -1) if len(self._epochs[i][0])), last)
        if src != last:
            a = replace(a, **{name: _carried(getattr(a, name), src, last) for name in
                              ("epoch_value", "epoch_unclamped", "epoch_clamped",
                               "epoch_state", "epoch_reason", "epoch_dead")})
        cfg = self.gate.config
        with np.errstate(invalid="ignore"):
            ok = bool(e >= cfg.min_epochs and a.epoch_state[0, last] == VALUE
                      and not (cfg.fail_dead_seeds and a.epoch_dead[0, last])
                      and a.epoch_value[0, last] >= a.threshold[0])
        at = replace(a, passed=np.array([ok]), pass_epoch=np.array([e if ok else 0]),
                     n_epochs=np.array([e]))
        return self.gate.decision_record(at, 0, self.blueprint)


def _carried(values: np.ndarray, src: int, dst: int) -> np.ndarray:
    """``values`` [1, E] with epoch ``dst`` holding what epoch ``src`` holds."""
    out = values.copy()
    out[:, dst] = values[:, src]
    return out
