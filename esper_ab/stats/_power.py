"""Power: how many replicates are needed to detect a target difference at level alpha.

The paired tests compare a metric of the strategy with the baseline's, with replicates as the
independent units. To first order the estimated difference behaves like the mean of R
per-replicate contributions with standard deviation ``sd_per_replicate`` (sigma_1), so its
standard error is sigma_1 / sqrt(R). :func:`power` turns (effect, sigma_1, alpha) into the power
at R replicates and the replicates needed for a target power, using the noncentral t
distribution (df = R - 1) as the small-sample reference. :func:`pilot_sd_per_replicate`
estimates sigma_1 from a pilot table (cluster-bootstrap SE × sqrt(R)); :func:`simulate_power`
checks an estimate by Monte Carlo with the actual sign-flip test.

For the max − min gap metrics the first-order approximation needs the extreme blueprints to
be well separated; near ties the gap estimator is biased upward and the estimate is rough.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from esper_ab.errors import DataError, bad_value
from esper_ab.stats._counts import STRATEGY_METRICS, CountArrays, build_arrays, strategy_metrics
from esper_ab.stats._lazy import sps
from esper_ab.stats._paired import paired_metric_tests
from esper_ab.stats._resample import bootstrap_weights
from esper_ab.stats._schema import validate_decisions
from esper_ab.stats._simulate import SimulationDesign, simulate_counts

MAX_REPLICATES = 100_000  # the planner's hard cap


@dataclass(frozen=True)
class PowerEstimate:
    """Power of a two-sided paired test at ``n_replicates`` and the replicates needed.

    ``capped`` is True when the target power needs more than ``MAX_REPLICATES`` replicates
    (then ``replicates_needed`` is the cap and ``message`` says so)."""

    metric: str
    effect: float
    sd_per_replicate: float
    alpha: float
    target_power: float
    n_replicates: int
    power: float
    replicates_needed: int
    capped: bool = False
    message: str = ""


@dataclass(frozen=True)
class SimulatedPower:
    """Monte Carlo power of the sign-flip test, with a 95% Clopper–Pearson CI."""

    metric: str
    n_replicates: int
    alpha: float
    n_sims: int
    n_rejected: int
    power: float
    ci: tuple[float, float]


def _power_at(n: int, effect: float, sd: float, alpha: float) -> float:
    if n < 2:
        return float("nan")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        nc = math.sqrt(n) * abs(effect) / sd
    crit = float(sps.t.isf(alpha / 2, n - 1))
    if not math.isfinite(nc) or nc > 1e6:  # the noncentral t gives NaN far out: power is 1
        return 1.0
    with warnings.catch_warnings(record=True) as caught:   # boost: "did not converge"
        warnings.simplefilter("always", RuntimeWarning)
        p = float(sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc))
    failed = any(issubclass(w.category, RuntimeWarning) for w in caught)
    if failed or not math.isfinite(p):  # the normal approximation where the t fails
        p = float(sps.norm.sf(crit - nc) + sps.norm.cdf(-crit - nc))
    return min(max(p, 0.0), 1.0)


def replicates_for(effect: float, sd: float, alpha: float, target_power: float) -> int | None:
    """Smallest n >= 2 with noncentral-t power >= target, or None past ``MAX_REPLICATES``.

    Bounded work: the normal approximation brackets n, then an integer bisection (at most
    ~17 steps) finds it; a non-finite or negligible effect never loops."""
    if not (math.isfinite(effect) and math.isfinite(sd) and sd > 0) or effect == 0:
        return None
    z = sps.norm.isf(alpha / 2) + sps.norm.ppf(target_power)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ratio = float(z * sd / abs(effect))     # a Python float: its square overflows quietly
    if not math.isfinite(ratio) or ratio * ratio > MAX_REPLICATES:
        return None
    lo, hi = 1, max(2, math.ceil(ratio * ratio))
    while _power_at(hi, effect, sd, alpha) < target_power:  # the t needs a few more
        if hi >= MAX_REPLICATES:
            return None
        lo, hi = hi, min(MAX_REPLICATES, 2 * hi)
    while hi - lo > 1:  # invariant: power(lo) < target <= power(hi) (lo = 1 counts as below)
        mid = (lo + hi) // 2
        if mid >= 2 and _power_at(mid, effect, sd, alpha) >= target_power:
            hi = mid
        else:
            lo = mid
    return hi


def _real(x: object) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def power(
    *, effect: float, sd_per_replicate: float, alpha: float = 0.05, target_power: float = 0.8,
    n_replicates: int = 20, metric: str = "balanced_accuracy",
) -> PowerEstimate:
    """Power at ``n_replicates`` and the smallest number of replicates reaching ``target_power``.

    A zero or negligible effect does not raise or loop: it returns ``capped=True`` with
    ``replicates_needed = MAX_REPLICATES`` and a message."""
    if not (_real(alpha) and 0 < alpha < 1):
        raise bad_value("alpha", alpha, "use a level in (0, 1)")
    if not (_real(target_power) and 0 < target_power < 1):
        raise bad_value("target_power", target_power, "use a power in (0, 1), e.g. 0.8")
    if not (_real(sd_per_replicate) and sd_per_replicate > 0
            and math.isfinite(sd_per_replicate)):
        raise bad_value("sd_per_replicate", sd_per_replicate, "use a positive, finite SD")
    if not isinstance(effect, int | float) or not math.isfinite(effect):
        raise bad_value("effect", effect, "use the finite difference you want to detect")
    if not (isinstance(n_replicates, int) and n_replicates >= 2):
        raise bad_value("n_replicates", n_replicates, "use at least 2 replicates")
    effect = float(effect)
    n = replicates_for(effect, sd_per_replicate, alpha, target_power)
    at_n = _power_at(n_replicates, effect, sd_per_replicate, alpha)
    message = ""
    if n is None:
        message = (f"an effect of {effect:.3g} (sd per replicate {sd_per_replicate:.3g}) needs "
                   f"more than {MAX_REPLICATES} replicates for power {target_power:g}: it is "
                   "practically zero; plan for the smallest effect that matters")
    return PowerEstimate(
        metric=metric, effect=effect, sd_per_replicate=float(sd_per_replicate),
        alpha=float(alpha), target_power=float(target_power), n_replicates=int(n_replicates),
        power=at_n, replicates_needed=MAX_REPLICATES if n is None else int(n),
        capped=n is None, message=message)


# Rate-type metrics only: realized utility is a sum that grows with the number of replicates.
POWER_METRICS = tuple(m for m in STRATEGY_METRICS if m != "realized_utility")


def _check_metric(metric: str) -> int:
    if metric not in POWER_METRICS:
        raise bad_value("metric", metric, f"use one of {list(POWER_METRICS)} (rates, whose "
                        "standard error shrinks like 1/sqrt(replicates))")
    return STRATEGY_METRICS.index(metric)


def pilot_sd_per_replicate(
    pilot: pd.DataFrame, *, strategy: str, baseline: str = "baseline",
    metric: str = "balanced_accuracy", n_boot: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """(observed difference, sigma_1) of metric(strategy) − metric(baseline) in a pilot table."""
    j = _check_metric(metric)
    frame = validate_decisions(pilot)
    for name in (strategy, baseline):
        if name not in set(frame["strategy"]):
            raise DataError(f"strategy {name!r} is not in the pilot table: pass one of "
                            f"{sorted(set(frame['strategy']))}")
    arrays = build_arrays(frame, strategies=(strategy, baseline))
    counts = arrays.counts[:, :2]
    R = counts.shape[0]
    point = strategy_metrics(counts.sum(axis=0))
    w = bootstrap_weights(np.random.default_rng(seed), n_boot, R)
    boot = strategy_metrics((w @ counts.reshape(R, -1)).reshape((n_boot,) + counts.shape[1:]))
    diff = boot[:, 0, j] - boot[:, 1, j]
    se = float(np.nanstd(diff, ddof=1))
    return float(point[0, j] - point[1, j]), se * math.sqrt(R)


def power_from_pilot(
    pilot: pd.DataFrame, *, strategy: str, baseline: str = "baseline",
    metric: str = "balanced_accuracy", effect: float | None = None, alpha: float = 0.05,
    target_power: float = 0.8, n_replicates: int | None = None, n_boot: int = 2000, seed: int = 0,
) -> PowerEstimate:
    """:func:`power` with sigma_1 (and, unless given, the effect) estimated from a pilot."""
    observed, sd = pilot_sd_per_replicate(pilot, strategy=strategy, baseline=baseline,
                                          metric=metric, n_boot=n_boot, seed=seed)
    n = n_replicates or int(pd.unique(validate_decisions(pilot)["replicate"]).size)
    return power(effect=observed if effect is None else effect, sd_per_replicate=sd, alpha=alpha,
                 target_power=target_power, n_replicates=n, metric=metric)


def simulate_power(
    design: SimulationDesign, *, strategy: str, baseline: str = "baseline",
    metric: str = "balanced_accuracy", n_replicates: int | None = None, alpha: float = 0.05,
    n_sims: int = 200, n_perm: int = 1000, seed: int = 0,
) -> SimulatedPower:
    """Fraction of simulated tables in which the sign-flip test of ``metric`` alone rejects
    at ``alpha`` (for the whole verdict, fairness included, see ``plan_replicates``)."""
    _check_metric(metric)
    if n_replicates is not None:
        design = design.with_replicates(n_replicates)
    names = [s.name for s in design.strategies]
    for name in (strategy, baseline):
        if name not in names:
            raise bad_value("strategy", name, f"use one of the design's strategies {names}")
    idx = [names.index(baseline), names.index(strategy)]
    blueprints = tuple(sorted(design.blueprints))
    k = 0
    for i in range(n_sims):
        counts = simulate_counts(design, seed=seed * 1_000_003 + i)[:, idx]
        arrays = CountArrays(strategies=(baseline, strategy), blueprints=blueprints, counts=counts)
        (t,) = paired_metric_tests(arrays, strategy=strategy, baseline=baseline, metrics=(metric,),
                                   n_perm=n_perm, n_boot=0, ci_level=0.95,
                                   rng=np.random.default_rng([seed, i]))
        k += int(t.pvalue < alpha)
    lo, hi = _clopper_pearson(k, n_sims)
    return SimulatedPower(metric=metric, n_replicates=design.n_replicates, alpha=alpha,
                          n_sims=n_sims, n_rejected=k, power=k / n_sims, ci=(lo, hi))


def _clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(sps.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi
