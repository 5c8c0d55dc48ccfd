"""``analyze``: the one entry point from a decisions table to a verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from esper_ab.errors import DataError, bad_value
from esper_ab.stats._clustered import cochran_test, mcnemar_tests
from esper_ab.stats._counts import STRATEGY_METRICS, DecisionArrays, N, build_arrays
from esper_ab.stats._disparities import disparity_table
from esper_ab.stats._fairness import FairnessTable, fairness_table
from esper_ab.stats._groups import GroupMetrics, compute_group_metrics
from esper_ab.stats._matched import matched_comparison_from
from esper_ab.stats._paired import paired_metric_tests
from esper_ab.stats._report import Analysis
from esper_ab.stats._resample import bootstrap_weights
from esper_ab.stats._results import TestResult, adjust_tests
from esper_ab.stats._schema import validate_decisions
from esper_ab.stats._verdict import SelectionRule, Verdict, decide
from esper_ab.stats._within import blueprint_pass_test, kruskal_test

SPEARMAN_NAME = "statistic_value_spearman"
# Stream ids for the seeded random generators, one per component.
_BOOT, _WITHIN, _PAIRED, _FAIR, _COCHRAN = 1, 2, 3, 4, 5
_FAIR_BOOT = 500  # bootstrap resamples of the fairness criterion's CI (each is costly)


def _check_options(alpha: float, n_boot: int, n_perm: int, ci_level: float) -> None:
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise bad_value("alpha", alpha, "use a significance level in (0, 1), e.g. 0.05")
    if not (isinstance(ci_level, int | float) and 0 < ci_level < 1):
        raise bad_value("ci_level", ci_level, "use a confidence level in (0, 1), e.g. 0.95")
    if not (isinstance(n_boot, int) and n_boot >= 0):
        raise bad_value("n_boot", n_boot, "use a number of bootstrap resamples >= 0 (1000 typical)")
    if not (isinstance(n_perm, int) and n_perm >= 1):
        raise bad_value("n_perm", n_perm, "use a number of permutations >= 1 (2000 typical)")


def _spearman_tests(metrics: GroupMetrics) -> list[TestResult]:
    out = []
    for (s, b), row in metrics.by_group.iterrows():
        if math.isnan(row["spearman_pvalue"]):
            continue
        n_measured = int(row["n"] - row["n_unmeasured"])
        units = int(row["spearman_units"])
        how = ("over seeds (one per replicate)" if units == n_measured else
               f"over {units} replicate mean ranks (several seeds share a replicate; rho over "
               f"the seeds, descriptive: {row['spearman_rho_seeds']:.3f})")
        out.append(TestResult(
            name=SPEARMAN_NAME,
            method=f"Spearman rank correlation of statistic and value, t approximation, rho "
                   f"and p {how}; unmeasured statistics left out",
            statistic=float(row["spearman_rho"]), pvalue=float(row["spearman_pvalue"]),
            effect_size=float(row["spearman_rho"]),
            effect_size_name="spearman_rho (seeds)" if units == n_measured
            else "spearman_rho (replicate mean ranks)",
            strategy=str(s), blueprint=str(b), n_units=units))
    return out


def analyze(
    df: pd.DataFrame,
    *,
    baseline: str = "baseline",
    alpha: float = 0.05,
    rule: SelectionRule | None = None,
    n_boot: int = 1000,
    n_perm: int = 2000,
    ci_level: float = 0.95,
    matched_pass_rate: float | None = None,
    seed: int = 0,
) -> Analysis:
    """Group metrics, disparities with CIs, every test (raw and adjusted p), the matched
    comparison and the verdict for one decisions table. Deterministic given ``seed``.

    ``matched_pass_rate`` defaults to the baseline's overall pass rate.
    """
    _check_options(alpha, n_boot, n_perm, ci_level)
    rule = rule if rule is not None else SelectionRule()
    frame = validate_decisions(df)
    names = sorted(pd.unique(frame["strategy"]))
    if baseline not in names:
        raise DataError(f"baseline strategy {baseline!r} is not in the table (strategies: "
                        f"{names}): pass the baseline's name with baseline=... / --baseline")
    order = (baseline,) + tuple(s for s in names if s != baseline)
    arrays = build_arrays(frame, strategies=order)
    weights = bootstrap_weights(np.random.default_rng([seed, _BOOT]), n_boot, arrays.n_replicates)
    metrics = compute_group_metrics(arrays, weights=weights, ci_level=ci_level)
    disparities = disparity_table(arrays, weights, ci_level=ci_level)

    tests: list[TestResult] = []
    within_rng = np.random.default_rng([seed, _WITHIN])
    for s in order:
        for t in (blueprint_pass_test(arrays, strategy=s, n_perm=n_perm, rng=within_rng),
                  kruskal_test(arrays, strategy=s, n_perm=n_perm, rng=within_rng)):
            if t is not None:
                tests.append(t)
    for i, s in enumerate(order[1:], start=1):
        rng = np.random.default_rng([seed, _PAIRED, i])
        tests += paired_metric_tests(arrays, strategy=s, baseline=baseline,
                                     metrics=STRATEGY_METRICS, n_perm=n_perm, n_boot=n_boot,
                                     ci_level=ci_level, rng=rng)
        tests += mcnemar_tests(arrays, strategy=s, baseline=baseline, ci_level=ci_level,
                               n_perm=n_perm, rng=rng)
    q = cochran_test(arrays, n_perm=n_perm, rng=np.random.default_rng([seed, _COCHRAN]))
    if q is not None:
        tests.append(q)
    tests += _spearman_tests(metrics)
    adjusted = adjust_tests(tests)

    target = matched_pass_rate
    if target is None:
        target = float(metrics.overall.loc[baseline, "pass_rate"])
    matched = matched_comparison_from(frame, strategies=order, target_pass_rate=target,
                                      weights=weights, ci_level=ci_level, baseline=baseline,
                                      n_perm=min(n_perm, 200), seed=seed)
    label = (f"the baseline's pass rate {target:.2f}" if matched_pass_rate is None
             else f"the matched pass rate {target:.2f}")
    fairness = _fairness(arrays, rule, baseline=baseline, weights=weights, n_perm=n_perm,
                         ci_level=ci_level, seed=seed)
    verdict = decide(disparities=disparities, tests=adjusted, fairness=fairness,
                     overall=metrics.overall, matched_tests=matched.tests, baseline=baseline,
                     rule=rule, alpha=alpha, n_replicates=arrays.n_replicates,
                     matched_label=label, missing_replicates=missing_replicates(arrays))
    return Analysis(
        baseline=baseline, alpha=float(alpha), ci_level=float(ci_level), n_boot=n_boot,
        n_perm=n_perm, seed=seed, rule=rule, n_replicates=arrays.n_replicates,
        metrics=metrics, disparities=disparities, tests=adjusted, matched=matched,
        verdict=verdict, fairness=fairness, decisions=frame, matched_label=label)


def missing_replicates(arrays: DecisionArrays) -> dict[str, tuple[str, ...]]:
    """The replicates in which a strategy judged no seed while another did: a paired design
    leaves them out of that strategy's comparisons, so the output names them."""
    n = arrays.counts[..., N].sum(axis=-1)          # (R, S)
    present = n.sum(axis=1) > 0
    out = {}
    for j, s in enumerate(arrays.strategies):
        lacking = [str(arrays.replicates[r]) for r in np.flatnonzero(present & (n[:, j] == 0))]
        if lacking:
            out[str(s)] = tuple(lacking)
    return out


def _fairness(arrays: DecisionArrays, rule: SelectionRule, *, baseline: str,
              weights: np.ndarray, n_perm: int, ci_level: float, seed: int) -> FairnessTable:
    return fairness_table(
        arrays.counts, strategies=arrays.strategies, blueprints=arrays.blueprints,
        baseline=baseline, min_valuable=rule.min_valuable,
        min_non_valuable=rule.min_non_valuable, weights=weights[:_FAIR_BOOT], n_perm=n_perm,
        ci_level=ci_level, rng=np.random.default_rng([seed, _FAIR]))


def select_winner(
    analysis: Analysis | pd.DataFrame, *, rule: SelectionRule | None = None,
    baseline: str = "baseline", alpha: float = 0.05, seed: int = 0,
) -> Verdict:
    """The verdict for an :class:`Analysis` (re-decided under ``rule``, recomputing only the
    fairness criterion when the rule's seed minimums differ) or for a decisions table (runs
    :func:`analyze` with ``baseline``, ``alpha`` and ``seed`` first)."""
    if not isinstance(analysis, Analysis):
        return analyze(analysis, baseline=baseline, alpha=alpha, rule=rule, seed=seed).verdict
    a = analysis
    rule = rule or a.rule
    fairness = a.fairness
    if (rule.min_valuable, rule.min_non_valuable) != (fairness.min_valuable,
                                                       fairness.min_non_valuable):
        arrays = build_arrays(a.decisions, strategies=a.strategies)
        weights = bootstrap_weights(np.random.default_rng([a.seed, _BOOT]), a.n_boot,
                                    arrays.n_replicates)
        fairness = _fairness(arrays, rule, baseline=a.baseline, weights=weights,
                             n_perm=a.n_perm, ci_level=a.ci_level, seed=a.seed)
    return decide(disparities=a.disparities, tests=a.tests, fairness=fairness,
                  overall=a.metrics.overall, matched_tests=a.matched.tests,
                  baseline=a.baseline, rule=rule, alpha=a.alpha, n_replicates=a.n_replicates,
                  matched_label=a.matched_label,
                  missing_replicates=dict(a.verdict.missing_replicates))
