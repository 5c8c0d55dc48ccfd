"""The G2 gate (stage 3 of the pipeline): per-epoch measurements -> a decision record.

A gate is a strategy, a threshold (or per-blueprint thresholds), a window over the
steps of an epoch (last measured step, mean, median), an optional EMA across epochs
(initialised from the first measured epoch; from a fixed ``ema_start`` only where a
preset models a client that does so), a minimum number of epochs
in TRAINING and a clamp. The decision logic is written once, in numpy over arrays of
shape [seeds, epochs, steps]: the online ``GateTracker`` calls it with one seed and the
replay engine with thousands, so replay equals the online gate exactly.

Order of operations per seed: step statistic -> clamp (the unclamped value is kept and
flagged) -> window per epoch -> EMA over epochs -> checks at each epoch boundary.
Epochs are counted from 1; the gate can pass at epoch e only when e >= min_epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from esper_ab.errors import bad_value
from esper_ab.gate._config import (
    WINDOWS,
    Check,
    DecisionArrays,
    GateConfig,
    GateDecision,
    StepMeasurement,
    Window,
)
from esper_ab.gate._presets import PRESETS
from esper_ab.gate._tracker import GateTracker
from esper_ab.strategies import (
    NOT_APPLICABLE,
    REASON_CODE,
    REASONS,
    STATE_NAMES,
    UNMEASURED,
    VALUE,
    Strategy,
    get_strategy,
)


def _all_along_steps(valid: np.ndarray) -> list[bool]:
    """Per step slice: whether every entry is valid (then a slice needs no mask)."""
    return valid.reshape(valid.shape[0], -1).all(axis=1).tolist()


def _window(values: np.ndarray, valid: np.ndarray, window: Window) -> np.ndarray:
    """Reduce the step axis (the FIRST axis: [K, ...]) over valid entries; NaN where none is
    valid. Step-first, every step slice is contiguous for the replay engine's layout; the
    online tracker passes a view of its [1, E, K] arrays, so both run this same code. A
    slice whose entries are all valid takes the unmasked form of the same operation."""
    full = _all_along_steps(valid)
    if window == "last":
        # The last valid step wins: a left-to-right pass of selects, one slice at a time.
        out = np.full(values.shape[1:], np.nan)
        for k in range(values.shape[0]):
            np.copyto(out, values[k], where=True if full[k] else valid[k])
        return out
    any_valid = valid.any(axis=0)
    if window == "mean":
        # A fixed left-to-right sum over the valid steps: the same float result whatever
        # the padding (skipping a step adds nothing; the sum starts at +0.0, never -0.0).
        acc = np.zeros(values.shape[1:])
        for k in range(values.shape[0]):
            np.add(acc, values[k], out=acc, where=True if full[k] else valid[k])
        out = acc / np.maximum(valid.sum(axis=0), 1)
    else:
        # Sort with invalid entries as +inf at the end; the median of the n valid values
        # is (x[(n-1)//2] + x[n//2]) / 2, exact for odd n as well. Sorted along a
        # contiguous last axis ([..., K]): many tiny sorts, no strided access.
        k_count = values.shape[0]
        ordered = np.sort(np.moveaxis(np.where(valid, values, np.inf), 0, -1), axis=-1)
        n = valid.sum(axis=0)
        lo = np.maximum((n - 1) // 2, 0)[..., None]
        hi = np.minimum(np.maximum(n // 2, 0), k_count - 1)[..., None]
        a = np.take_along_axis(ordered, lo, axis=-1)[..., 0]
        b = np.take_along_axis(ordered, hi, axis=-1)[..., 0]
        with np.errstate(invalid="ignore"):
            out = (a + b) / 2.0
    return np.where(any_valid, out, np.nan)


def _last_reason(reason: np.ndarray, which: np.ndarray) -> np.ndarray:
    """The reason of the last step where ``which`` holds; 0 (``ok``) where none does (an
    epoch without steps: its padding)."""
    full = _all_along_steps(which)
    out = np.zeros(reason.shape[1:], dtype=reason.dtype)
    for k in range(reason.shape[0]):
        np.copyto(out, reason[k], where=True if full[k] else which[k])
    return out


@dataclass(frozen=True)
class StepStates:
    """What the step states alone make of each epoch ([S, E]; ``measured`` is [K, S, E]).
    No gate setting enters it: replay computes it once per statistic's states."""

    measured: np.ndarray     # bool: the step exists and holds a value
    has: np.ndarray          # bool: a measured step
    observed: np.ndarray     # bool: any step at all
    ep_state: np.ndarray     # int8
    ep_reason: np.ndarray    # int8
    ep_dead: np.ndarray      # bool


def step_states(state: np.ndarray, reason: np.ndarray, mask: np.ndarray) -> StepStates:
    """The per-epoch states of step states shaped step-first, [K, S, E] (any views)."""
    measured = mask & (state == VALUE)
    has = measured.any(axis=0)
    observed = mask.any(axis=0)
    unmeasured = (mask & (state == UNMEASURED)).any(axis=0)
    ep_state = np.where(has, VALUE, np.where(unmeasured | ~observed, UNMEASURED,
                                             NOT_APPLICABLE)).astype(np.int8)
    ep_reason = np.where(has, _last_reason(reason, measured),
                         _last_reason(reason, mask)).astype(np.int8)
    ep_dead = has & ~(measured & (reason != REASON_CODE["dead_seed"])).any(axis=0)
    return StepStates(measured=measured, has=has, observed=observed, ep_state=ep_state,
                      ep_reason=ep_reason, ep_dead=ep_dead)


@dataclass(frozen=True)
class StepReduction:
    """One gate's per-epoch reduction of step statistics, shaped [S, E]: what the window and
    the clamp make of each epoch, before the EMA and the checks. It depends on the statistic,
    the window and the clamp only, so replay computes it once for every config that shares
    them (thresholds, min_epochs, EMA decays of a sweep)."""

    w_raw: np.ndarray        # windowed unclamped value (NaN: no measured step)
    w_val: np.ndarray        # windowed clamped value (the same array when nothing clamps)
    w_flag: np.ndarray       # bool: the windowed value was clamped
    has: np.ndarray          # bool: a measured step
    observed: np.ndarray     # bool: any step at all
    ep_state: np.ndarray     # int8
    ep_reason: np.ndarray    # int8
    ep_dead: np.ndarray      # bool
    any_clamped: bool


class Gate:
    """A validated, ready-to-use G2 gate."""

    def __init__(self, config: GateConfig | None = None, *, strategy: Strategy | None = None):
        config = config or GateConfig()
        self.config = config
        self.strategy = strategy or get_strategy(config.strategy, **dict(config.strategy_params))
        if config.calibration is not None and strategy is None:
            self.strategy.load_fitted_state(config.calibration)
        default = self.strategy.THRESHOLD.default
        self.threshold = self.strategy.validate_threshold(
            default if config.threshold is None else config.threshold)
        self.thresholds = {bp: self.strategy.validate_threshold(t)
                           for bp, t in dict(config.thresholds).items()}
        if config.window not in WINDOWS:
            raise bad_value("window", config.window, f"use one of {list(WINDOWS)}")
        if config.ema_decay is not None and not (0.0 <= config.ema_decay < 1.0):
            raise bad_value("ema_decay", config.ema_decay, "use a decay in [0, 1), or null")
        if config.ema_start is not None and (config.ema_decay is None or not math.isfinite(
                config.ema_start)):
            raise bad_value("ema_start", config.ema_start, "use a finite start value with an "
                            "ema_decay, or null (start at the first measured epoch)")
        if isinstance(config.min_epochs, bool) or not isinstance(config.min_epochs, int) \
                or config.min_epochs < 0:
            raise bad_value("min_epochs", config.min_epochs, "use a whole number >= 0")
        if config.clamp is not None and not (isinstance(config.clamp, int | float)
                                             and config.clamp > 0):
            raise bad_value("clamp", config.clamp, "use a positive number, or null")

    @classmethod
    def from_preset(cls, name: str) -> Gate:
        if name not in PRESETS:
            raise bad_value("gate preset", name, f"use one of {sorted(PRESETS)} or a YAML path")
        return cls(PRESETS[name])

    def with_strategy(self, strategy: Strategy) -> Gate:
        return Gate(replace(self.config, strategy=strategy.name,
                            strategy_params=dict(strategy.params)), strategy=strategy)

    def threshold_for(self, blueprint: str | None) -> float:
        return self.thresholds.get(blueprint, self.threshold) if blueprint else self.threshold

    # -- vectorized core -----------------------------------------------------------
    def decide_arrays(self, value: np.ndarray, state: np.ndarray, reason: np.ndarray,
                      mask: np.ndarray, thresholds: np.ndarray) -> DecisionArrays:
        """Decide for S seeds from step statistics shaped [S, E, K] (mask: step exists)."""
        steps = [np.moveaxis(a, -1, 0) for a in (value, state, reason, mask)]
        return self.decide_epochs(self.reduce_steps(*steps), thresholds)

    def reduction_key(self) -> tuple:
        """Every setting ``reduce_steps`` reads: gates with equal keys reduce the same
        statistic identically (the replay engine caches on it)."""
        return self.config.window, self.config.clamp

    def reduce_steps(self, value: np.ndarray, state: np.ndarray, reason: np.ndarray,
                     mask: np.ndarray, *, states: StepStates | None = None) -> StepReduction:
        """Clamp and window step statistics shaped step-first, [K, S, E] (any views).
        Reads only the settings of ``reduction_key``; ``states`` is ``step_states`` of the
        same (state, reason, mask), when the caller has it already."""
        cfg = self.config
        st = step_states(state, reason, mask) if states is None else states
        measured = st.measured
        if cfg.clamp is None:
            step_clamped, any_clamped = None, False
        else:
            step_clamped = measured & (value > cfg.clamp)
            any_clamped = bool(step_clamped.any())
        w_raw = _window(value, measured, cfg.window)
        if any_clamped:
            w_val = _window(np.where(step_clamped, cfg.clamp, value), measured, cfg.window)
            w_flag = _window(step_clamped.astype(np.float64), measured, "last") > 0 \
                if cfg.window == "last" else step_clamped.any(axis=0)
        else:
            w_val, w_flag = w_raw, np.zeros(w_raw.shape, dtype=bool)
        return StepReduction(w_raw=w_raw, w_val=w_val, w_flag=w_flag, has=st.has,
                             observed=st.observed, ep_state=st.ep_state,
                             ep_reason=st.ep_reason, ep_dead=st.ep_dead,
                             any_clamped=any_clamped)

    def decide_epochs(self, steps: StepReduction, thresholds: np.ndarray) -> DecisionArrays:
        """The EMA across epochs and the checks at each epoch boundary (arrays [S, E]).
        The result may share arrays with ``steps``: treat both as read-only."""
        cfg = self.config
        w_raw, w_val, ep_state = steps.w_raw, steps.w_val, steps.ep_state
        if cfg.ema_decay is not None:
            w_raw = self._ema(w_raw, steps.has)
            w_val = self._ema(w_val, steps.has) if steps.any_clamped else w_raw
            seen = np.maximum.accumulate(steps.has, axis=1)
            ep_state = np.where(seen & ~steps.has, VALUE, ep_state).astype(np.int8)
        epoch_no = np.arange(1, w_raw.shape[1] + 1)[None, :]
        ok_measured = ep_state == VALUE
        with np.errstate(invalid="ignore"):
            ok = w_val >= thresholds[:, None]
        ok &= ok_measured
        ok &= steps.observed
        ok &= epoch_no >= cfg.min_epochs
        if cfg.fail_dead_seeds:
            ok &= ~steps.ep_dead
        passed = ok.any(axis=1)
        pass_epoch = np.where(passed, np.argmax(ok, axis=1) + 1, 0)
        return DecisionArrays(passed=passed, pass_epoch=pass_epoch, epoch_value=w_val,
                              epoch_unclamped=w_raw, epoch_clamped=steps.w_flag & ok_measured,
                              epoch_state=ep_state, epoch_reason=steps.ep_reason,
                              epoch_dead=steps.ep_dead, n_epochs=steps.observed.sum(axis=1),
                              threshold=thresholds)

    def _ema(self, values: np.ndarray, has: np.ndarray) -> np.ndarray:
        """The EMA over epochs of [S, E] values (computed epoch-major: contiguous rows)."""
        d, start = self.config.ema_decay, self.config.ema_start
        vt, ht = np.ascontiguousarray(values.T), np.ascontiguousarray(has.T)
        out = np.full(vt.shape, np.nan)
        ema = np.full(vt.shape[1], np.nan if start is None else float(start))
        seen = np.zeros(vt.shape[1], dtype=bool)
        for e in range(vt.shape[0]):
            v, h = vt[e], ht[e]
            ema = np.where(h, np.where(np.isnan(ema), v, d * ema + (1.0 - d) * v), ema)
            seen |= h
            np.copyto(out[e], ema, where=seen)   # no value before the first measurement
        return out.T

    def decision_record(self, arrays: DecisionArrays, i: int,
                        blueprint: str | None) -> GateDecision:
        """The decision record of seed ``i`` (at its pass epoch, else its last epoch)."""
        n_ep = int(arrays.n_epochs[i])
        passed = bool(arrays.passed[i])
        e = int(arrays.pass_epoch[i]) - 1 if passed else max(n_ep - 1, 0)
        thr = float(arrays.threshold[i])
        st = int(arrays.epoch_state[i, e]) if n_ep else UNMEASURED
        val = float(arrays.epoch_value[i, e]) if n_ep and st == VALUE else None
        raw = float(arrays.epoch_unclamped[i, e]) if val is not None else None
        reason = REASONS[int(arrays.epoch_reason[i, e])] if n_ep else "no_steps"
        dead = bool(arrays.epoch_dead[i, e]) if n_ep else False
        checks = (
            Check("min_epochs", e + 1 >= self.config.min_epochs,
                  f"epoch {e + 1} of at least {self.config.min_epochs}"),
            Check("measured", st == VALUE, f"{STATE_NAMES[st]} ({reason})"),
            Check("alive", not (dead and self.config.fail_dead_seeds),
                  "dead seed: every gradient exactly 0 (blueprint defect)" if dead
                  else "gradient present"),
            Check("threshold", val is not None and val >= thr,
                  f"value {val if val is None else round(val, 6)} vs threshold {thr}"),
        )
        return GateDecision(blueprint=blueprint, passed=passed,
                            epoch=e + 1 if passed else None,
                            epochs_observed=e + 1 if passed else n_ep, value=val,
                            value_unclamped=raw,
                            clamped=bool(arrays.epoch_clamped[i, e]) if n_ep else False,
                            state=STATE_NAMES[st], reason=reason, threshold=thr, checks=checks)

    # -- convenience entry points ----------------------------------------------------
    def decide(self, epochs: Sequence[Sequence[StepMeasurement]], *,
               blueprint: str | None = None) -> GateDecision:
        """Decide for one seed from its per-epoch step measurements."""
        tracker = self.tracker(blueprint)
        decision = None
        for steps in epochs:
            decision = tracker.observe_epoch(steps)
            if decision.passed:
                break
        return decision if decision is not None else tracker.current()

    def tracker(self, blueprint: str | None = None) -> GateTracker:
        return GateTracker(self, blueprint)
