"""Calibrating strategies: per-blueprint thresholds and per-blueprint z-scores.

Both are fitted on *calibration* replicates (held out from evaluation) from the per-step
baseline statistic, and both fall back to the pooled calibration for a blueprint they
did not see.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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


def usable_rows(stat: StatisticBatch) -> np.ndarray:
    """Rows whose baseline statistic is a real measurement (dead seeds excluded)."""
    return (stat.state == VALUE) & (stat.reason == R["ok"])


def _blueprints(ctx: ContextBatch, n: int) -> np.ndarray:
    if ctx.blueprint is None:
        return np.full(n, None, dtype=object)
    return np.asarray(ctx.blueprint, dtype=object)


def _codes(bps: np.ndarray) -> tuple[list, np.ndarray]:
    """Distinct blueprints and each row's index into them (None maps to the last entry)."""
    codes, uniq = pd.factorize(np.asarray(bps, dtype=object), use_na_sentinel=True)
    uniq = [str(u) for u in uniq] + [None]
    return uniq, np.where(codes < 0, len(uniq) - 1, codes)


def _groups(bps: np.ndarray, usable: np.ndarray):
    """(blueprint, row indices of its usable rows) in sorted blueprint order."""
    uniq, inverse = _codes(bps)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    pairs = []
    for code, bp in enumerate(uniq):
        if bp is None:
            continue
        rows = order[bounds[code]:bounds[code + 1]]
        pairs.append((bp, rows[usable[rows]]))
    return sorted(pairs, key=lambda p: p[0])


def _lookup(table: dict[str, float], pooled: float, bps: np.ndarray) -> np.ndarray:
    uniq, inverse = _codes(bps)
    per = np.array([table.get(u, pooled) if u is not None else pooled for u in uniq],
                   dtype=np.float64)
    return per[inverse]


def _check_state(state: dict[str, Any], keys: tuple[str, ...], name: str) -> dict[str, Any]:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConfigError(f"calibration state of {name!r} lacks {missing}: re-export it")
    return state


class BaselineCalibrated(Strategy):
    """A strategy that re-scores the baseline statistic with a per-blueprint calibration.

    ``fit_values``/``transform`` take baseline statistics already computed, so the replay
    engine computes the baseline once per trace and cross-fits folds on it; the online
    path (``_fit``/``_compute``) goes through the very same two methods.
    """

    needs_calibration = True

    def _fit(self, cal: CalibrationData) -> dict[str, Any]:
        stat = Baseline().statistic_batch(cal.seed, cal.host, cal.context)
        return self.fit_values(stat.value, usable_rows(stat), cal.blueprint)

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        base = Baseline().statistic_batch(seed, host, ctx)
        return self.transform(base, _blueprints(ctx, len(seed)))

    def fit_values(self, values: np.ndarray, usable: np.ndarray,
                   blueprints: np.ndarray) -> dict[str, Any]:
        if not usable.any():
            raise ConfigError("calibration has no measurable baseline statistic: record "
                              "calibration replicates whose seeds receive gradients")
        return self._fit_values(values, usable, blueprints)

    def transform(self, base: StatisticBatch, blueprints: np.ndarray) -> StatisticBatch:
        value = np.where(base.state == VALUE, self._score(base.value, blueprints), np.nan)
        return StatisticBatch(value=value, state=base.state, reason=base.reason)

    def _fit_values(self, values, usable, blueprints) -> dict[str, Any]:
        raise NotImplementedError

    def _score(self, values: np.ndarray, blueprints: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class PerBlueprintThreshold(BaselineCalibrated):
    name = "per_blueprint_threshold"
    formula = ("R_base / t_b, t_b = quantile_q of the blueprint's calibration R_base "
               "(equal calibration pass rates 1-q); pass when >= threshold (1.0 = at t_b)")
    PARAMS = (
        ParamSpec("quantile", "float", 0.5, low=0.05, high=0.95, domain=(0.0, 1.0),
                  doc="calibration quantile per blueprint"),
        ParamSpec("min_samples", "int", 5, low=1, high=200, domain=(1, 10**9),
                  doc="fewer calibration rows than this: use the pooled threshold"),
    )
    THRESHOLD = ParamSpec("threshold", "float", 1.0, low=0.25, high=4.0, log=True,
                          domain=(0.0, float("inf")),
                          doc="multiplier of each blueprint's calibrated threshold")

    def _fit_values(self, values, usable, blueprints) -> dict[str, Any]:
        q = self.params["quantile"]
        pooled = float(np.quantile(values[usable], q))
        thresholds, counts = {}, {}
        for bp, rows in _groups(blueprints, usable):
            v = values[rows]
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

    def _score(self, values, blueprints):
        t = _lookup(self._fitted["thresholds"], self._fitted["pooled"], blueprints)
        return values / np.maximum(t, _FLOOR)


class ZScore(BaselineCalibrated):
    name = "zscore"
    formula = ("(log R_base - mu_b) / sigma_b against the blueprint's calibration "
               "distribution, shrunk toward the pooled one with pseudo-count k")
    PARAMS = (
        ParamSpec("shrinkage", "float", 10.0, low=0.1, high=1000.0, log=True,
                  domain=(0.0, float("inf")), doc="pseudo-count k toward the pooled fit"),
        ParamSpec("min_sigma", "float", 1e-3, low=1e-4, high=1.0, log=True,
                  domain=(1e-12, float("inf")), doc="floor of sigma_b"),
    )
    THRESHOLD = ParamSpec("threshold", "float", 0.0, low=-3.0, high=3.0,
                          domain=(-float("inf"), float("inf")),
                          doc="pass when z >= threshold")

    def _fit_values(self, values, usable, blueprints) -> dict[str, Any]:
        logv = np.log(np.maximum(values, _FLOOR))
        pooled_mu = float(logv[usable].mean())
        pooled_var = float(logv[usable].var())
        k = self.params["shrinkage"]
        mu, sigma, counts = {}, {}, {}
        for bp, rows in _groups(blueprints, usable):
            v = logv[rows]
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

    def _score(self, values, blueprints):
        mu = _lookup(self._fitted["mu"], self._fitted["pooled_mu"], blueprints)
        sigma = _lookup(self._fitted["sigma"], self._fitted["pooled_sigma"], blueprints)
        return (np.log(np.maximum(values, _FLOOR)) - mu) / sigma
