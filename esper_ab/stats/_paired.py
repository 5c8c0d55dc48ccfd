"""Strategy-vs-baseline tests of any count metric, paired on replicates (sign flips)."""

from __future__ import annotations

import numpy as np

from esper_ab.stats._counts import (
    SMOOTH,
    STRATEGY_METRICS,
    CountArrays,
    DecisionArrays,
    N,
    strategy_metrics,
)
from esper_ab.stats._resample import (
    bootstrap_ci,
    bootstrap_weights,
    jackknife_weights,
    nan_sd,
    permutation_pvalue,
    sign_flips,
)
from esper_ab.stats._results import TestResult

POOLED_METRICS = ("balanced_accuracy", "mcc", "realized_utility")  # blueprint totals suffice


def metric_test_name(metric: str) -> str:
    return f"{metric}_vs_baseline"


def paired_metric_tests(
    arrays: DecisionArrays | CountArrays, *, strategy: str, baseline: str, metrics: tuple[str, ...],
    n_perm: int, n_boot: int, ci_level: float, rng: np.random.Generator,
) -> list[TestResult]:
    """Sign-flip permutation test and paired cluster-bootstrap CI of metric(strategy) − metric(baseline).

    Under H0 the two strategies' labels are exchangeable within a replicate, so each
    permutation swaps the strategy's and the baseline's per-replicate counts in a random set
    of replicates and recomputes both metrics on the pooled counts (all 2**R swaps when they
    fit in ``n_perm``). The bootstrap resamples replicates, keeping the pairing.
    """
    s = arrays.strategies.index(strategy)
    b = arrays.strategies.index(baseline)
    both = arrays.counts[:, [s, b]]  # (R, 2, B, K)
    common = (both[..., N].sum(axis=-1) > 0).all(axis=1)
    pair = both[common]
    R = pair.shape[0]
    if R == 0:
        return [TestResult(name=metric_test_name(m), method="none: no replicate has both "
                           "strategies", statistic=float("nan"), pvalue=float("nan"),
                           strategy=strategy, note="evaluate both strategies on the same "
                           "replicates (common random numbers)") for m in metrics]
    cols = [STRATEGY_METRICS.index(m) for m in metrics]
    if all(m in POOLED_METRICS for m in metrics):
        pair = pair.sum(axis=2, keepdims=True)  # pooled metrics need only blueprint totals
    observed = strategy_metrics(pair.sum(axis=0))[:, cols]
    diff = observed[0] - observed[1]

    flips, exact = sign_flips(rng, n_perm, R)
    f = flips.astype(float)
    flat = pair.reshape(R, 2, -1)
    swapped_s = (1 - f) @ flat[:, 0] + f @ flat[:, 1]
    swapped_b = f @ flat[:, 0] + (1 - f) @ flat[:, 1]
    perm = strategy_metrics(np.stack([swapped_s, swapped_b], axis=1).reshape((-1,) + pair.shape[1:]))
    perm_diff = perm[:, 0, cols] - perm[:, 1, cols]
    pvals = permutation_pvalue(diff, perm_diff, exact=exact)

    w = bootstrap_weights(rng, n_boot, R)
    boot = strategy_metrics((w @ flat.reshape(R, -1)).reshape((n_boot,) + pair.shape[1:]))
    boot_diff = boot[:, 0, cols] - boot[:, 1, cols]
    jack = strategy_metrics((jackknife_weights(R) @ flat.reshape(R, -1)).reshape((R,) + pair.shape[1:]))
    lo, hi = bootstrap_ci(diff, boot_diff, jack[:, 0, cols] - jack[:, 1, cols], ci_level,
                          smooth=SMOOTH[cols])
    se = nan_sd(boot_diff)
    how = "all 2^R swaps (exact)" if exact else f"{flips.shape[0]} random swap patterns"
    ci_kind = {True: "BCa", False: "percentile"}
    out = []
    for i, m in enumerate(metrics):
        out.append(TestResult(
            name=metric_test_name(m),
            method=(f"sign-flip permutation over replicates, {how}; {ci_kind[bool(SMOOTH[cols[i]])]} "
                    f"cluster bootstrap CI of the difference ({n_boot} resamples)"),
            statistic=float(diff[i]), pvalue=float(pvals[i]), effect_size=float(diff[i]),
            effect_size_name=f"{m} difference (strategy - baseline)",
            ci=(float(lo[i]), float(hi[i])), ci_level=ci_level, strategy=strategy, n_units=R,
            standard_error=float(se[i]),
            note=f"{m}: strategy {observed[0, i]:.4g}, baseline {observed[1, i]:.4g}"))
    return out
