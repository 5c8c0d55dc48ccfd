"""Strategy-vs-baseline tests, paired on replicates (and on seeds where the method needs it)."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

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

MCNEMAR_NAME = "correctness_mcnemar"
PASS_MCNEMAR_NAME = "blueprint_pass_mcnemar"
COCHRAN_NAME = "correctness_cochran_q"
EXACT_BELOW = 25
POOLED_METRICS = ("balanced_accuracy", "mcc", "realized_utility")  # McNemar is exact (binomial) with fewer discordant pairs than this


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


def mcnemar(n10: int, n01: int, n: int, *, ci_level: float = 0.95) -> tuple[float, float, str, tuple[float, float], float]:
    """McNemar on a paired 2x2 with discordant counts n10 (first only) and n01 (second only).

    Exact binomial (two-sided, doubled tail) with fewer than 25 discordant pairs, otherwise
    the continuity-corrected chi-square. Returns statistic, p, method, Wald CI and the
    difference in proportions (n10 − n01) / n.
    """
    d = n10 + n01
    diff = (n10 - n01) / n if n else float("nan")
    z = sps.norm.ppf(0.5 + ci_level / 2)
    se = np.sqrt(max(d - (n10 - n01) ** 2 / n, 0.0)) / n if n else float("nan")
    ci = (float(diff - z * se), float(diff + z * se))
    if d == 0:
        return 0.0, 1.0, "McNemar: no discordant pairs", ci, diff
    if d < EXACT_BELOW:
        k = min(n10, n01)
        p = min(1.0, 2.0 * float(sps.binom.cdf(k, d, 0.5)))
        return float(k), p, "McNemar exact (binomial, < 25 discordant pairs)", ci, diff
    stat = (abs(n10 - n01) - 1.0) ** 2 / d
    return float(stat), float(sps.chi2.sf(stat, 1)), "McNemar chi-square with continuity correction", ci, diff


def _correct(arrays: DecisionArrays) -> tuple[np.ndarray, np.ndarray]:
    """(passed, correct) seed matrices (S, n_seeds), NaN where a strategy did not judge a seed."""
    passed = arrays.seed_matrix("passed")
    valuable = arrays.seed_matrix("valuable")
    correct = np.where(np.isnan(passed), np.nan, (passed == valuable).astype(float))
    return passed, correct


def mcnemar_tests(
    arrays: DecisionArrays, *, strategy: str, baseline: str, ci_level: float
) -> list[TestResult]:
    """McNemar on per-seed correctness (strategy level) and on pass per blueprint.

    Seeds are paired on (replicate, blueprint, seed); seeds judged by only one of the two
    strategies are left out.
    """
    s = arrays.strategies.index(strategy)
    b = arrays.strategies.index(baseline)
    passed, correct = _correct(arrays)
    both = ~np.isnan(passed[s]) & ~np.isnan(passed[b])
    if not both.any():
        return [TestResult(name=MCNEMAR_NAME, method="none: no seed judged by both strategies",
                           statistic=float("nan"), pvalue=float("nan"), strategy=strategy)]
    cs, cb = correct[s, both] == 1, correct[b, both] == 1
    n10, n01 = int((cs & ~cb).sum()), int((~cs & cb).sum())
    stat, p, method, ci, diff = mcnemar(n10, n01, int(both.sum()), ci_level=ci_level)
    out = [TestResult(
        name=MCNEMAR_NAME, method=method + " on per-seed correctness (pass == valuable)",
        statistic=stat, pvalue=p, effect_size=diff,
        effect_size_name="accuracy difference (strategy - baseline)", ci=ci, ci_level=ci_level,
        strategy=strategy, n_units=int(both.sum()),
        note=f"discordant: {n10} only strategy correct, {n01} only baseline correct; seeds "
             "treated as independent pairs")]
    ps, pb = passed[s, both] == 1, passed[b, both] == 1
    bp = arrays.seed_blueprint[both]
    nb = len(arrays.blueprints)
    only_s = np.bincount(bp, weights=ps & ~pb, minlength=nb).astype(int)
    only_b = np.bincount(bp, weights=~ps & pb, minlength=nb).astype(int)
    n_bp = np.bincount(bp, minlength=nb)
    for j, name in enumerate(arrays.blueprints):
        if n_bp[j] == 0:
            continue
        stat, p, method, ci, diff = mcnemar(int(only_s[j]), int(only_b[j]), int(n_bp[j]),
                                            ci_level=ci_level)
        out.append(TestResult(
            name=PASS_MCNEMAR_NAME, method=method + " on pass", statistic=stat, pvalue=p,
            effect_size=diff, effect_size_name="pass-rate difference (strategy - baseline)",
            ci=ci, ci_level=ci_level, strategy=strategy, blueprint=name, n_units=int(n_bp[j]),
            note=f"discordant: {only_s[j]} pass only under strategy, {only_b[j]} only under "
                 "baseline"))
    return out


def cochran_q(x: np.ndarray) -> tuple[float, float]:
    """Cochran's Q for a (units × treatments) 0/1 matrix; (0, 1) when no row varies."""
    x = np.asarray(x, dtype=float)
    k = x.shape[1]
    col = x.sum(axis=0)
    row = x.sum(axis=1)
    total = row.sum()
    den = k * total - (row**2).sum()
    if den <= 0:
        return 0.0, 1.0
    q = (k - 1) * (k * (col**2).sum() - total**2) / den
    return float(q), float(sps.chi2.sf(q, k - 1))


def cochran_test(arrays: DecisionArrays) -> TestResult | None:
    """Cochran's Q of per-seed correctness across ≥ 3 strategies (seeds judged by all)."""
    k = len(arrays.strategies)
    if k < 3:
        return None
    _, correct = _correct(arrays)
    x = correct[:, ~np.isnan(correct).any(axis=0)].T
    if len(x) == 0:
        return None
    q, p = cochran_q(x)
    return TestResult(
        name=COCHRAN_NAME, method=f"Cochran's Q across {k} strategies on per-seed correctness",
        statistic=q, pvalue=p, effect_size=q / (len(x) * (k - 1)) if len(x) else float("nan"),
        effect_size_name="Q / (n (k - 1))", n_units=len(x),
        note="seeds treated as independent blocks")
