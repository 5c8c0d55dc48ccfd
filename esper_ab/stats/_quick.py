"""The verdict from per-replicate counts alone: what the power planner and the simulation
checks run thousands of times.

It calls the very functions that :func:`esper_ab.stats.analyze` uses for the verdict (the
sign-flip tests of the objective with their bootstrap SE, Holm across candidates, the
fairness criterion and its paired test, :func:`decide`), and skips what does not change the
kind of verdict: per-blueprint tests, AUC and Spearman, the matched comparison (so a winner's
``gain_kind`` is left empty) and, under ``gap_bound="estimate"``, the fairness CI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esper_ab.stats._counts import STRATEGY_METRICS, CountArrays, N, overall_rates, strategy_metrics
from esper_ab.stats._fairness import fairness_table
from esper_ab.stats._paired import paired_metric_tests
from esper_ab.stats._resample import bootstrap_weights
from esper_ab.stats._results import adjust_tests
from esper_ab.stats._verdict import SelectionRule, Verdict, decide


def quick_verdict(
    counts: np.ndarray, *, strategies: tuple[str, ...], blueprints: tuple[str, ...],
    baseline: str, rule: SelectionRule, alpha: float = 0.05, n_perm: int = 500,
    n_boot: int = 200, ci_level: float = 0.95, seed: int = 0,
) -> Verdict:
    """The :class:`Verdict` for a count array ``(R, S, B, N_FIELDS)`` (strategies in the
    order given, blueprints sorted as the analysis sorts them)."""
    arrays = CountArrays(strategies=tuple(strategies), blueprints=tuple(blueprints),
                         counts=counts)
    R = arrays.n_replicates
    total = counts.sum(axis=0)
    point = strategy_metrics(total)
    disparities = pd.DataFrame(point, index=pd.Index(arrays.strategies, name="strategy"),
                               columns=list(STRATEGY_METRICS))
    rates = overall_rates(total)
    overall = pd.DataFrame({"n": total[..., N].sum(axis=-1), "pass_rate": rates["pass_rate"],
                            "tpr": rates["tpr"]}, index=disparities.index)
    tests = []
    for i, s in enumerate(arrays.strategies):
        if s == baseline:
            continue
        tests += paired_metric_tests(arrays, strategy=s, baseline=baseline,
                                     metrics=(rule.objective,), n_perm=n_perm, n_boot=n_boot,
                                     ci_level=ci_level, rng=np.random.default_rng([seed, 3, i]))
    n_fair_boot = n_boot if rule.gap_bound == "ci_high" else 0
    weights = bootstrap_weights(np.random.default_rng([seed, 1]), n_fair_boot, R)
    fairness = fairness_table(
        counts, strategies=arrays.strategies, blueprints=arrays.blueprints, baseline=baseline,
        min_valuable=rule.min_valuable, min_non_valuable=rule.min_non_valuable,
        weights=weights, n_perm=n_perm, ci_level=ci_level, rng=np.random.default_rng([seed, 4]))
    return decide(disparities=disparities, tests=adjust_tests(tests), fairness=fairness,
                  overall=overall, matched_tests=(), baseline=baseline, rule=rule, alpha=alpha,
                  n_replicates=R, matched_label="the baseline's pass rate")
