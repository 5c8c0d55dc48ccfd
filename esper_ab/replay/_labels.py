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
                       valuable: Any) -> StatisticBatch:
    """The cross-fitted statistic of ``template`` over every position of ``arr``."""
    base = template.base_statistic(arr.seed, arr.host, arr.context)
    seeds = _position_seeds(arr)
    value = np.asarray(value, dtype=np.float64)
    valuable = np.asarray(valuable, dtype=bool)
    bps = arr.context.blueprint
    out = np.full(len(base.value), np.nan)
    for cal_reps, eval_reps in split.folds:
        cal = arr.rows_of(cal_reps)
        fitted = type(template)(**template.params)
        fitted.load_fitted_state(fitted.fit_rows(
            StatisticBatch(base.value[cal], base.state[cal], base.reason[cal]), bps[cal],
            seeds[cal], value[seeds[cal]], valuable[seeds[cal]]))
        rows = arr.rows_of(eval_reps)
        out[rows] = fitted.transform(
            StatisticBatch(base.value[rows], base.state[rows], base.reason[rows]),
            bps[rows]).value
    return StatisticBatch(out, base.state, base.reason)
