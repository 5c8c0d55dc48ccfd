"""Calibrating strategies: per-blueprint thresholds and per-blueprint z-scores.

Both are fitted on *calibration* replicates (held out from evaluation) from the per-step
baseline statistic, and both fall back to the pooled calibration for a blueprint they
did not see.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from esper_ab.errors import ConfigError
from esper_ab.strategies._base import (
    VALUE,
    CalibrationData,
    ContextBatch,
    ParamSpec,
    R,
    StatisticBatch,
    StatsBatch,
    Strategy,
)
from esper_ab.strategies._ratio import Baseline

_FLOOR = 1e-12   # floor for calibrated thresholds and for log(0)


def _baseline_values(cal: CalibrationData) -> tuple[np.ndarray, np.ndarray]:
    """Baseline statistic per calibration row, and which rows are usable values."""
    stat = Baseline().statistic_batch(cal.seed, cal.host, cal.context)
    usable = (stat.state == VALUE) & (stat.reason == R["ok"])
    if not usable.any():
        raise ConfigError("calibration has no measurable baseline statistic: record "
                          "calibration replicates whose seeds receive gradients")
    return stat.value, usable


def _blueprints(ctx: ContextBatch, n: int) -> np.ndarray:
    if ctx.blueprint is None:
        return np.full(n, None, dtype=object)
    return np.asarray(ctx.blueprint, dtype=object)


def _lookup(table: dict[str, float], pooled: float, bps: np.ndarray) -> np.ndarray:
    return np.array([table.get(b, pooled) if b is not None else pooled for b in bps],
                    dtype=np.float64)


def _check_state(state: dict[str, Any], keys: tuple[str, ...], name: str) -> dict[str, Any]:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConfigError(f"calibration state of {name!r} lacks {missing}: re-export it")
    return state


class PerBlueprintThreshold(Strategy):
    name = "per_blueprint_threshold"
    formula = ("R_base / t_b, t_b = quantile_q of the blueprint's calibration R_base "
               "(equal calibration pass rates 1-q); pass when >= threshold (1.0 = at t_b)")
    needs_calibration = True
    PARAMS = (
        ParamSpec("quantile", "float", 0.5, low=0.05, high=0.95, domain=(0.0, 1.0),
                  doc="calibration quantile per blueprint"),
        ParamSpec("min_samples", "int", 5, low=1, high=200, domain=(1, 10**9),
                  doc="fewer calibration rows than this: use the pooled threshold"),
    )
    THRESHOLD = ParamSpec("threshold", "float", 1.0, low=0.25, high=4.0, log=True,
                          domain=(0.0, float("inf")),
                          doc="multiplier of each blueprint's calibrated threshold")

    def _fit(self, cal: CalibrationData) -> dict[str, Any]:
        values, usable = _baseline_values(cal)
        q = self.params["quantile"]
        pooled = float(np.quantile(values[usable], q))
        thresholds, counts = {}, {}
        for bp in sorted({b for b in cal.blueprint if b is not None}):
            v = values[usable & (cal.blueprint == bp)]
            counts[bp] = int(len(v))
            if len(v) >= self.params["min_samples"]:
                thresholds[bp] = float(np.quantile(v, q))
        return {"thresholds": thresholds, "pooled": pooled, "n": counts}

    def _validate_fitted(self, state):
        return _check_state(state, ("thresholds", "pooled"), self.name)

    def thresholds(self, multiplier: float = 1.0) -> dict[str, float]:
        """Per-blueprint thresholds in baseline units (for export and reports)."""
        fitted = self._fitted or {}
        return {bp: multiplier * t for bp, t in fitted.get("thresholds", {}).items()}

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        base = Baseline().statistic_batch(seed, host, ctx)
        t = _lookup(self._fitted["thresholds"], self._fitted["pooled"],
                    _blueprints(ctx, len(seed)))
        value = np.where(base.state == VALUE, base.value / np.maximum(t, _FLOOR), np.nan)
        return StatisticBatch(value=value, state=base.state, reason=base.reason)


class ZScore(Strategy):
    name = "zscore"
    formula = ("(log R_base - mu_b) / sigma_b against the blueprint's calibration "
               "distribution, shrunk toward the pooled one with pseudo-count k")
    needs_calibration = True
    PARAMS = (
        ParamSpec("shrinkage", "float", 10.0, low=0.1, high=1000.0, log=True,
                  domain=(0.0, float("inf")), doc="pseudo-count k toward the pooled fit"),
        ParamSpec("min_sigma", "float", 1e-3, low=1e-4, high=1.0, log=True,
                  domain=(1e-12, float("inf")), doc="floor of sigma_b"),
    )
    THRESHOLD = ParamSpec("threshold", "float", 0.0, low=-3.0, high=3.0,
                          domain=(-float("inf"), float("inf")),
                          doc="pass when z >= threshold")

    def _fit(self, cal: CalibrationData) -> dict[str, Any]:
        values, usable = _baseline_values(cal)
        logv = np.log(np.maximum(values, _FLOOR))
        pooled_mu = float(logv[usable].mean())
        pooled_var = float(logv[usable].var())
        k = self.params["shrinkage"]
        mu, sigma, counts = {}, {}, {}
        for bp in sorted({b for b in cal.blueprint if b is not None}):
            v = logv[usable & (cal.blueprint == bp)]
            n = len(v)
            counts[bp] = n
            m_b = float(v.mean()) if n else pooled_mu
            var_b = float(v.var()) if n else pooled_var
            mu[bp] = (n * m_b + k * pooled_mu) / (n + k) if n + k > 0 else pooled_mu
            var = (n * var_b + k * pooled_var) / (n + k) if n + k > 0 else pooled_var
            sigma[bp] = max(float(np.sqrt(var)), self.params["min_sigma"])
        return {"mu": mu, "sigma": sigma, "pooled_mu": pooled_mu,
                "pooled_sigma": max(float(np.sqrt(pooled_var)), self.params["min_sigma"]),
                "n": counts}

    def _validate_fitted(self, state):
        return _check_state(state, ("mu", "sigma", "pooled_mu", "pooled_sigma"), self.name)

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        base = Baseline().statistic_batch(seed, host, ctx)
        bps = _blueprints(ctx, len(seed))
        mu = _lookup(self._fitted["mu"], self._fitted["pooled_mu"], bps)
        sigma = _lookup(self._fitted["sigma"], self._fitted["pooled_sigma"], bps)
        z = (np.log(np.maximum(base.value, _FLOOR)) - mu) / sigma
        value = np.where(base.state == VALUE, z, np.nan)
        return StatisticBatch(value=value, state=base.state, reason=base.reason)
