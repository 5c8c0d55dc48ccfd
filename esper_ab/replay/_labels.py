"""Replay of strategies fitted against measured values (``strategies.LabelCalibrated``, e.g.
``value_calibrated``): their calibration rows carry each seed's ground truth, and they are
cross-fitted like the other calibrating strategies (each fold's evaluation replicates are
scored by a fit on the other folds' replicates, never on their own)."""

from __future__ import annotations

from typing import Any

import numpy as np

from esper_ab.replay._layout import ReplayArrays
from esper_ab.strategies import LabelCalibrated, StatisticBatch, ValueCalibration

__all__ = ["label_cross_fitted", "labelled_calibration"]


def _position_seeds(arr: ReplayArrays) -> np.ndarray:
    """The seed index of every layout position ([K, S, E] flattened)."""
    def make() -> np.ndarray:
        k, s, e = arr.step_first
        return np.broadcast_to(np.arange(s)[None, :, None], (k, s, e)).reshape(-1)

    return arr.derived("position-seeds", make)


def labelled_calibration(arr: ReplayArrays, rows: np.ndarray, value: Any,
                         valuable: Any) -> ValueCalibration:
    """``arr.calibration(rows)`` with each row's seed, measured value and ``valuable``
    (``value``/``valuable``: per seed, aligned with ``arr.seed_table``)."""
    base = arr.calibration(rows)
    seeds = _position_seeds(arr)[rows]
    return ValueCalibration(blueprint=base.blueprint, seed=base.seed, host=base.host,
                            context=base.context, seed_key=seeds,
                            value=np.asarray(value, dtype=np.float64)[seeds],
                            valuable=np.asarray(valuable, dtype=bool)[seeds])


def label_cross_fitted(arr: ReplayArrays, template: LabelCalibrated, split: Any, value: Any,
                       valuable: Any, seed_rows: np.ndarray) -> StatisticBatch:
    """The cross-fitted statistic of ``template`` over every position of ``arr``.

    What configs share is computed once per trace: the base statistic per
    ``template.base_key()``, and each calibration fold's per-seed table (with its hash) per
    (``base_key``, fold). A config fits its thresholds on those tables and scores every
    position at once with its fold's per-blueprint thresholds, broadcast per seed over the
    [K, S, E] layout (``seed_rows``: per seed, its evaluation fold x blueprints + its
    blueprint's index), exactly as ``transform`` scores the rows online."""
    key = (template.name, template.base_key())
    base = arr.statistic(("label-base", key), lambda: template.base_statistic(
        arr.seed, arr.host, arr.context))
    uniq, _ = arr.seed_codes()
    tables = []
    for cal_reps, _ in split.folds:
        def scores(cal_reps: tuple[int, ...] = cal_reps) -> Any:
            seeds = _position_seeds(arr)
            cal = arr.rows_of(cal_reps)
            return template.seed_scores(
                StatisticBatch(base.value[cal], base.state[cal], base.reason[cal]),
                arr.context.blueprint[cal], seeds[cal],
                np.asarray(value, dtype=np.float64)[seeds[cal]],
                np.asarray(valuable, dtype=bool)[seeds[cal]])

        per_seed, digest = arr.derived(("label-seed-scores", key, tuple(cal_reps)), scores)
        fitted = type(template)(**template.params)
        fitted.load_fitted_state(fitted.fit_seeds(per_seed, digest))
        tables.append(fitted.blueprint_thresholds(uniq))
    t = np.concatenate(tables)[seed_rows][None, :, None]
    kse = StatisticBatch(arr.kse(base.value), arr.kse(base.state), arr.kse(base.reason))
    return StatisticBatch(template.apply_thresholds(kse, t).value.reshape(-1), base.state,
                          base.reason)
