"""Disparities across blueprints: thin functions over GroupMetrics, and their bootstrap CIs.

- pass-rate gap: max − min pass rate across blueprints; pass-rate ratio: min / max;
- equal-opportunity gap: max − min TPR;
- equalized-odds gap: the larger of the TPR gap and the FPR gap.

Blueprints where a rate is undefined (no valuable / no non-valuable seed) are skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esper_ab.stats._counts import (
    DISPARITY_METRICS,
    SMOOTH,
    STRATEGY_METRICS,
    DecisionArrays,
    nan_max2,
    resampled_counts,
    strategy_metrics,
)
from esper_ab.stats._groups import GroupMetrics
from esper_ab.stats._resample import bootstrap_ci, jackknife_weights


def pass_rate_gap(metrics: GroupMetrics) -> pd.Series:
    """max − min pass rate across blueprints, per strategy."""
    return metrics.difference("pass_rate").rename("pass_rate_gap")


def pass_rate_ratio(metrics: GroupMetrics) -> pd.Series:
    """min / max pass rate across blueprints, per strategy (1.0 when no blueprint passes)."""
    return metrics.ratio("pass_rate").rename("pass_rate_ratio")


def equal_opportunity_gap(metrics: GroupMetrics) -> pd.Series:
    """max − min TPR (pass | valuable) across blueprints, per strategy."""
    return metrics.difference("tpr").rename("equal_opportunity_gap")


def equalized_odds_gap(metrics: GroupMetrics) -> pd.Series:
    """max(TPR gap, FPR gap) across blueprints, per strategy."""
    tpr, fpr = metrics.difference("tpr"), metrics.difference("fpr")
    return pd.Series(nan_max2(tpr.to_numpy(), fpr.to_numpy()), index=tpr.index,
                     name="equalized_odds_gap")


def bootstrap_strategy_metrics(
    arrays: DecisionArrays, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every strategy metric: point (S, M), cluster-bootstrap (W, S, M), jackknife (R, S, M)."""
    point = strategy_metrics(arrays.counts.sum(axis=0))
    boot = strategy_metrics(resampled_counts(weights, arrays.counts))
    jack = strategy_metrics(resampled_counts(jackknife_weights(arrays.n_replicates), arrays.counts))
    return point, boot, jack


def disparity_table(arrays: DecisionArrays, weights: np.ndarray, *, ci_level: float) -> pd.DataFrame:
    """Each disparity with its cluster-bootstrap CI over replicates (percentile for the
    disparities, BCa for the smooth metrics; see ``bootstrap_ci``).

    Columns: ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high`` for each disparity, and the
    same for balanced accuracy, MCC and realized utility. Index: strategy.
    """
    point, boot, jack = bootstrap_strategy_metrics(arrays, weights)
    lo, hi = bootstrap_ci(point, boot, jack, ci_level, smooth=SMOOTH)
    data: dict[str, np.ndarray] = {}
    for j, name in enumerate(STRATEGY_METRICS):
        data[name] = point[:, j]
        data[f"{name}_ci_low"] = lo[:, j]
        data[f"{name}_ci_high"] = hi[:, j]
    table = pd.DataFrame(data, index=pd.Index(arrays.strategies, name="strategy"))
    return table


__all__ = [
    "DISPARITY_METRICS",
    "bootstrap_strategy_metrics",
    "disparity_table",
    "equal_opportunity_gap",
    "equalized_odds_gap",
    "pass_rate_gap",
    "pass_rate_ratio",
]
