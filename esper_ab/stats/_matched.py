"""Matched comparison: every strategy re-thresholded to the same overall pass rate.

Statistics on different scales are not comparable at their own thresholds. Here each
strategy passes the seeds whose ``statistic`` is ≥ its own quantile-matched threshold, chosen
so that its overall pass rate equals a common target (by default the baseline's). Seeds with
an unmeasured statistic never pass. Ties at the threshold all pass, so the realized rate may
exceed the target slightly; it is reported. ``pass_epoch`` is cleared: it is not defined at
the new threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from esper_ab.errors import ConfigError, shown
from esper_ab.stats._counts import build_arrays
from esper_ab.stats._disparities import disparity_table
from esper_ab.stats._groups import GroupMetrics, compute_group_metrics
from esper_ab.stats._paired import paired_metric_tests
from esper_ab.stats._results import TestResult

MATCHED_OBJECTIVES = ("balanced_accuracy", "mcc", "realized_utility")
DESCRIPTIVE = ("descriptive, no p-value: the matched thresholds are fit on the whole table, "
               "so a sign-flip test over replicates runs liberal under clustering (A/A rate "
               "0.061-0.062 at level 0.05); the CI only picks the wording of the gain")


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields explicitly
class MatchedComparison:
    """Metrics and disparities of every strategy at a common overall pass rate; ``tests``
    holds the paired objective tests against the baseline there (when a baseline is given):
    the matched gain and its CI, descriptive: their ``pvalue`` is NaN (see ``DESCRIPTIVE``)."""

    target_pass_rate: float
    thresholds: pd.Series
    realized_pass_rate: pd.Series
    metrics: GroupMetrics
    disparities: pd.DataFrame
    tests: tuple[TestResult, ...] = ()


def matched_threshold(statistic: np.ndarray, pass_rate: float) -> float:
    """Threshold t such that ``statistic >= t`` passes round(pass_rate * n) of the n seeds.

    ``n`` counts unmeasured (NaN) seeds, which never pass. Returns +inf when nothing passes.
    """
    if not 0.0 <= pass_rate <= 1.0:
        raise ConfigError(f"pass_rate={shown(pass_rate)} is invalid: use a rate in [0, 1]")
    n = statistic.size
    k = int(round(pass_rate * n))
    measured = np.sort(statistic[~np.isnan(statistic)])[::-1]
    if k == 0 or measured.size == 0:
        return float("inf")
    return float(measured[min(k, measured.size) - 1])


def rethreshold(df: pd.DataFrame, *, pass_rate: float) -> tuple[pd.DataFrame, pd.Series]:
    """A copy of a validated table where each strategy passes at a matched threshold."""
    out = df.copy()
    thresholds = {}
    for s, idx in out.groupby("strategy", sort=False).groups.items():
        stat = out.loc[idx, "statistic"].to_numpy(dtype=float)
        t = matched_threshold(stat, pass_rate)
        thresholds[s] = t
        passed = np.zeros(stat.size, dtype=bool) if np.isposinf(t) else np.nan_to_num(stat, nan=-np.inf) >= t
        out.loc[idx, "passed"] = passed
    out["pass_epoch"] = np.nan
    return out, pd.Series(thresholds, name="threshold", dtype=float)


def matched_comparison_from(
    frame: pd.DataFrame, *, strategies: tuple[str, ...], target_pass_rate: float,
    weights: np.ndarray, ci_level: float, baseline: str | None = None, n_perm: int = 200,
    seed: int = 0,
) -> MatchedComparison:
    """The matched comparison for a validated frame, reusing bootstrap weights; with a
    ``baseline``, also the paired objective tests of every other strategy against it."""
    matched, thresholds = rethreshold(frame, pass_rate=target_pass_rate)
    arrays = build_arrays(matched, strategies=strategies)
    metrics = compute_group_metrics(arrays, weights=weights[:0], ci_level=ci_level,
                                    rank_metrics=False)
    disparities = disparity_table(arrays, weights, ci_level=ci_level)
    tests: list[TestResult] = []
    for i, s in enumerate(strategies):
        if baseline is None or s == baseline:
            continue
        found = paired_metric_tests(arrays, strategy=s, baseline=baseline,
                                    metrics=MATCHED_OBJECTIVES, n_perm=n_perm,
                                    n_boot=int(weights.shape[0]), ci_level=ci_level,
                                    rng=np.random.default_rng([seed, i]))
        tests += [replace(t, pvalue=float("nan"), pvalue_adjusted=None,
                          method=f"{t.method}; {DESCRIPTIVE}") for t in found]
    return MatchedComparison(
        target_pass_rate=float(target_pass_rate),
        thresholds=thresholds.reindex(list(strategies)),
        realized_pass_rate=metrics.overall["pass_rate"].rename("realized_pass_rate"),
        metrics=metrics,
        disparities=disparities,
        tests=tuple(tests),
    )
