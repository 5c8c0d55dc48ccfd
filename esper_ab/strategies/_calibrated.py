"""Calibrating strategies: per-blueprint thresholds and per-blueprint z-scores.

Both are fitted on *calibration* replicates (held out from evaluation) from the per-step
baseline statistic, and both fall back to the pooled calibration for a blueprint they
did not see.
"""

from __future__ import annotations

from typing import Any, ClassVar

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


def _per_blueprint(table: dict[str, float], pooled: float, uniq: list) -> np.ndarray:
    """One value per distinct blueprint (``_codes`` order); the pooled one for a blueprint
    the calibration did not see, and for rows without a blueprint."""
    return np.array([table.get(u, pooled) if u is not None else pooled for u in uniq],
                    dtype=np.float64)


def _check_state(state: dict[str, Any], keys: tuple[str, ...], name: str) -> dict[str, Any]:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConfigError(f"calibration state of {name!r} lacks {missing}: re-export it")
    return state


class BaselineCalibrated(Strategy):
    """A strategy that re-scores the baseline statistic with a per-blueprint calibration.

    Fitting and scoring are split into parameter-free and parameter-dependent parts, so the
    replay engine can compute the baseline, its ``prepare``d form and the calibration groups
    once per trace and fold, and cross-fit thousands of configs on them; the online path
    (``_fit``/``_compute``) goes through the very same methods:

    - ``prepare(values)``: an elementwise, parameter-free transform of the baseline values;
    - ``fit_grouped(pooled, groups)``: the fitted state from the prepared usable values,
      pooled and per blueprint (``group_values`` builds both);
    - ``score_tables(blueprints)``: per distinct blueprint, the arrays ``_apply`` takes;
    - ``_apply(prepared, *row_params)``: the score, elementwise (no parameter of its own).
    """

    needs_calibration = True
    # fit_grouped depends on the values of each group, not on their order (quantiles): the
    # replay engine may pass them sorted.
    order_free_fit: ClassVar[bool] = False

    def _fit(self, cal: CalibrationData) -> dict[str, Any]:
        stat = Baseline().statistic_batch(cal.seed, cal.host, cal.context)
        return self.fit_values(stat.value, usable_rows(stat), cal.blueprint)

    def _compute(self, seed: StatsBatch, host: StatsBatch, ctx: ContextBatch) -> StatisticBatch:
        base = Baseline().statistic_batch(seed, host, ctx)
        return self.transform(base, _blueprints(ctx, len(seed)))

    def fit_values(self, values: np.ndarray, usable: np.ndarray,
                   blueprints: np.ndarray) -> dict[str, Any]:
        return self.fit_grouped(*self.group_values(self.prepare(values), usable, blueprints))

    @staticmethod
    def group_values(prepared: np.ndarray, usable: np.ndarray, blueprints: np.ndarray
                     ) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """The usable prepared values, pooled and per blueprint (sorted by name; a blueprint
        with rows but no usable one gets an empty array), each in row order."""
        return prepared[usable], [(bp, prepared[rows]) for bp, rows in
                                  _groups(blueprints, usable)]

    def fit_grouped(self, pooled: np.ndarray,
                    groups: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
        if not len(pooled):
            raise ConfigError("calibration has no measurable baseline statistic: record "
                              "calibration replicates whose seeds receive gradients")
        return self._fit_grouped(pooled, groups)

    def transform(self, base: StatisticBatch, blueprints: np.ndarray) -> StatisticBatch:
        uniq, codes = _codes(blueprints)
        return self.score(base, self.prepare(base.value),
                          [t[codes] for t in self.score_tables(uniq)])

    def score(self, base: StatisticBatch, prepared: np.ndarray,
              row_params: list[np.ndarray]) -> StatisticBatch:
        """The calibrated statistic from the prepared baseline and each row's parameters."""
        value = np.where(base.state == VALUE, self._apply(prepared, *row_params), np.nan)
        return StatisticBatch(value=value, state=base.state, reason=base.reason)

    def prepare(self, values: np.ndarray) -> np.ndarray:
        return values

    def _fit_grouped(self, pooled, groups) -> dict[str, Any]:
        raise NotImplementedError

    def score_tables(self, uniq: list) -> list[np.ndarray]:
        raise NotImplementedError

    def _apply(self, prepared: np.ndarray, *row_params: np.ndarray) -> np.ndarray:
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
    order_free_fit = True
    THRESHOLD = ParamSpec("threshold", "float", 1.0, low=0.25, high=4.0, log=True,
                          domain=(0.0, float("inf")),
                          doc="multiplier of each blueprint's calibrated threshold")

    def _fit_grouped(self, pooled_values, groups) -> dict[str, Any]:
        q = self.params["quantile"]
        pooled = float(np.quantile(pooled_values, q))
        thresholds, counts = {}, {}
        for bp, v in groups:
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

    def score_tables(self, uniq):
        return [_per_blueprint(self._fitted["thresholds"], self._fitted["pooled"], uniq)]

    def _apply(self, prepared, t):
        return prepared / np.maximum(t, _FLOOR)


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

    def prepare(self, values):
        return np.log(np.maximum(values, _FLOOR))

    def _fit_grouped(self, pooled, groups) -> dict[str, Any]:
        pooled_mu = float(pooled.mean())
        pooled_var = float(pooled.var())
        k = self.params["shrinkage"]
        mu, sigma, counts = {}, {}, {}
        for bp, v in groups:
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

    def score_tables(self, uniq):
        f = self._fitted
        return [_per_blueprint(f["mu"], f["pooled_mu"], uniq),
                _per_blueprint(f["sigma"], f["pooled_sigma"], uniq)]

    def _apply(self, prepared, mu, sigma):
        return (prepared - mu) / sigma
