"""The G2 gate (stage 3 of the pipeline): per-epoch measurements -> a decision record.

A gate is a strategy, a threshold (or per-blueprint thresholds), a window over the
steps of an epoch (last measured step, mean, median), an optional EMA across epochs
(initialised from the first measured epoch, never from 0), a minimum number of epochs
in TRAINING and a clamp. The decision logic is written once, in numpy over arrays of
shape [seeds, epochs, steps]: the online ``GateTracker`` calls it with one seed and the
replay engine with thousands, so replay equals the online gate exactly.

Order of operations per seed: step statistic -> clamp (the unclamped value is kept and
flagged) -> window per epoch -> EMA over epochs -> checks at each epoch boundary.
Epochs are counted from 1; the gate can pass at epoch e only when e >= min_epochs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from esper_ab.errors import ConfigError, bad_value
from esper_ab.gradients import GradStats
from esper_ab.strategies import (
    NOT_APPLICABLE,
    REASONS,
    STATE_NAMES,
    UNMEASURED,
    VALUE,
    ContextBatch,
    StatsBatch,
    Strategy,
    get_strategy,
)
from esper_ab.strategies._base import R

Window = Literal["last", "mean", "median"]
WINDOWS: tuple[Window, ...] = ("last", "mean", "median")
CHECKS = ("min_epochs", "measured", "alive", "threshold")


@dataclass(frozen=True)
class GateConfig:
    """Everything that defines a G2 gate. Validated when a ``Gate`` is built."""

    strategy: str = "baseline"
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None               # None: the strategy's default
    thresholds: Mapping[str, float] = field(default_factory=dict)  # per-blueprint overrides
    window: Window = "last"
    ema_decay: float | None = None               # None: no EMA
    min_epochs: int = 10
    clamp: float | None = None
    fail_dead_seeds: bool = True                 # a dead seed fails with its own reason
    calibration: Mapping[str, Any] | None = None  # fitted state of calibrating strategies

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "strategy_params": dict(self.strategy_params),
                "threshold": self.threshold, "thresholds": dict(self.thresholds),
                "window": self.window, "ema_decay": self.ema_decay,
                "min_epochs": self.min_epochs, "clamp": self.clamp,
                "fail_dead_seeds": self.fail_dead_seeds,
                "calibration": None if self.calibration is None else dict(self.calibration)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"gate config={data!r} is not a mapping: write 'key: value' pairs")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"gate config key(s) {unknown} are unknown: use {sorted(known)}")
        return cls(**dict(data))


PRESETS: dict[str, GateConfig] = {
    # esper-lite's G2 gradient-ratio check as it runs today (last measured batch path).
    "esper_lite_baseline": GateConfig(
        strategy="baseline", strategy_params={"legacy_edge_cases": True}, threshold=0.10,
        window="last", ema_decay=None, min_epochs=10, clamp=10.0, fail_dead_seeds=False),
    # The other esper-lite code path: EMA (decay 0.9) once per epoch.
    "esper_lite_ema": GateConfig(
        strategy="baseline", strategy_params={"legacy_edge_cases": True}, threshold=0.10,
        window="last", ema_decay=0.9, min_epochs=10, clamp=10.0, fail_dead_seeds=False),
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict for one seed, at its pass epoch or at the last epoch seen."""

    blueprint: str | None
    passed: bool
    epoch: int | None               # pass epoch (1-based), None if not passed
    epochs_observed: int
    value: float | None             # the value compared with the threshold
    value_unclamped: float | None
    clamped: bool
    state: str                      # value / unmeasured / not_applicable
    reason: str
    threshold: float
    checks: tuple[Check, ...]

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


@dataclass(frozen=True)
class StepMeasurement:
    """One step of one seed: its GradStats, the host's, and the first-order terms."""

    seed: GradStats
    host: GradStats
    first_order: float | None = None
    grad_out_norm: float | None = None
    delta_norm: float | None = None


@dataclass(frozen=True)
class DecisionArrays:
    """Vectorized decisions for S seeds over E epochs."""

    passed: np.ndarray          # [S] bool
    pass_epoch: np.ndarray      # [S] int, 1-based, 0 when not passed
    epoch_value: np.ndarray     # [S, E] value compared with the threshold (NaN: none)
    epoch_unclamped: np.ndarray  # [S, E]
    epoch_clamped: np.ndarray   # [S, E] bool
    epoch_state: np.ndarray     # [S, E] int8
    epoch_reason: np.ndarray    # [S, E] int8
    epoch_dead: np.ndarray      # [S, E] bool
    n_epochs: np.ndarray        # [S] int, epochs observed
    threshold: np.ndarray       # [S]


def _window(values: np.ndarray, valid: np.ndarray, window: Window) -> np.ndarray:
    """Reduce the step axis (last) over valid entries; NaN where none is valid."""
    any_valid = valid.any(axis=-1)
    if window == "last":
        k = values.shape[-1]
        last = k - 1 - np.argmax(valid[..., ::-1], axis=-1)
        out = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
    elif window == "mean":
        # A fixed left-to-right sum: the same float result whatever the padding.
        acc = np.zeros(values.shape[:-1])
        cnt = np.zeros(values.shape[:-1])
        for k in range(values.shape[-1]):
            v = valid[..., k]
            acc = acc + np.where(v, values[..., k], 0.0)
            cnt = cnt + v
        out = acc / np.maximum(cnt, 1)
    else:
        # Sort with invalid entries as +inf at the end; the median of the n valid values
        # is (x[(n-1)//2] + x[n//2]) / 2, exact for odd n as well.
        ordered = np.sort(np.where(valid, values, np.inf), axis=-1)
        n = valid.sum(axis=-1)
        lo = np.maximum((n - 1) // 2, 0)[..., None]
        hi = np.maximum(n // 2, 0)[..., None]
        hi = np.minimum(hi, values.shape[-1] - 1)
        a = np.take_along_axis(ordered, lo, axis=-1)[..., 0]
        b = np.take_along_axis(ordered, hi, axis=-1)[..., 0]
        with np.errstate(invalid="ignore"):
            out = (a + b) / 2.0
    return np.where(any_valid, out, np.nan)


def _last_reason(reason: np.ndarray, which: np.ndarray) -> np.ndarray:
    k = reason.shape[-1]
    last = k - 1 - np.argmax(which[..., ::-1], axis=-1)
    return np.take_along_axis(reason, last[..., None], axis=-1)[..., 0]


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
        cfg = self.config
        s, e_count, _ = value.shape
        measured = mask & (state == VALUE)
        clamp = math.inf if cfg.clamp is None else cfg.clamp
        step_clamped = measured & (value > clamp)
        clamped_vals = np.where(step_clamped, clamp, value)
        w_raw = _window(value, measured, cfg.window)
        any_clamped = bool(step_clamped.any())
        w_val = _window(clamped_vals, measured, cfg.window) if any_clamped else w_raw
        w_flag = _window(step_clamped.astype(np.float64), measured, "last") > 0 \
            if cfg.window == "last" else (step_clamped & measured).any(axis=-1)
        has = measured.any(axis=-1)
        observed = mask.any(axis=-1)
        unmeasured = (mask & (state == UNMEASURED)).any(axis=-1)
        ep_state = np.where(has, VALUE, np.where(unmeasured | ~observed, UNMEASURED,
                                                 NOT_APPLICABLE)).astype(np.int8)
        ep_reason = np.where(has, _last_reason(reason, measured),
                             _last_reason(reason, mask)).astype(np.int8)
        ep_dead = has & ~(measured & (reason != R["dead_seed"])).any(axis=-1)
        if cfg.ema_decay is not None:
            w_raw = self._ema(w_raw, has)
            w_val = self._ema(w_val, has) if any_clamped else w_raw
            seen = np.maximum.accumulate(has, axis=1)
            ep_state = np.where(seen & ~has, VALUE, ep_state).astype(np.int8)
        epoch_no = np.arange(1, e_count + 1)[None, :]
        ok_min = epoch_no >= cfg.min_epochs
        ok_measured = ep_state == VALUE
        ok_alive = ~ep_dead if cfg.fail_dead_seeds else np.ones_like(ep_dead)
        with np.errstate(invalid="ignore"):
            ok_thr = w_val >= thresholds[:, None]
        ok = ok_min & ok_measured & ok_alive & ok_thr & observed
        passed = ok.any(axis=1)
        pass_epoch = np.where(passed, np.argmax(ok, axis=1) + 1, 0)
        return DecisionArrays(passed=passed, pass_epoch=pass_epoch, epoch_value=w_val,
                              epoch_unclamped=w_raw, epoch_clamped=w_flag & ok_measured,
                              epoch_state=ep_state, epoch_reason=ep_reason, epoch_dead=ep_dead,
                              n_epochs=observed.sum(axis=1), threshold=thresholds)

    def _ema(self, values: np.ndarray, has: np.ndarray) -> np.ndarray:
        d = self.config.ema_decay
        out = np.full(values.shape, np.nan)
        ema = np.full(values.shape[0], np.nan)
        for e in range(values.shape[1]):
            v, h = values[:, e], has[:, e]
            ema = np.where(h, np.where(np.isnan(ema), v, d * ema + (1.0 - d) * v), ema)
            out[:, e] = ema
        return out

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

    def current(self) -> GateDecision:
        if self._decision is None:
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
            arrays = self.gate.decide_arrays(value, state, reason, mask, thr)
            self._decision = self.gate.decision_record(arrays, 0, self.blueprint)
        return self._decision


def load_gate_config(spec: str) -> GateConfig:
    """A preset name, or the path of a YAML file holding a gate config (or a winner.yaml)."""
    if spec in PRESETS:
        return PRESETS[spec]
    from pathlib import Path

    import yaml

    path = Path(spec)
    if not path.is_file():
        raise bad_value("gate", spec, f"use a preset {sorted(PRESETS)} or an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"gate file {spec!r} is not valid YAML ({exc.__class__.__name__}): "
                          "fix its syntax") from None
    if isinstance(data, Mapping) and "gate" in data:
        data = data["gate"]
    return GateConfig.from_dict(data)


def build_gate(spec: str | GateConfig) -> Gate:
    """A Gate from a preset name, a YAML path or a GateConfig."""
    return Gate(spec if isinstance(spec, GateConfig) else load_gate_config(spec))
