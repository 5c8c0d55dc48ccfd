"""Planning a study for the verdict itself: how many replicates until a planted better gate
is declared the winner with the target probability, fairness criterion included.

:func:`plan_replicates` starts from the analytic planner (``_power``: noncentral t at the
objective's effect and per-replicate SD, measured on a large simulated pilot, Holm-adjusted
alpha for the design's candidates) and checks the answer by simulating the whole verdict
(:func:`quick_verdict`: sign-flip test, Holm, degenerate gates, the debiased fairness bound
and the paired fairness test) at the planned n. Where the simulated power falls short it
grows n by the ratio of normal quantiles (at most doubling it) and simulates again; once an n
passes, the search narrows by bisection between the largest n that failed and the smallest
that passed. A passing n is one whose simulated power clears the target by 1.5 Monte Carlo
SE (never a bar above 1), so that an independent simulation at that n meets the target.
Every loop is bounded: at most ``max_rounds`` simulations, and ``max_replicates`` (capped
with a message) for effects too small to plan. Out-of-range arguments are refused with one
line each (:func:`check_plan_arguments`), and so is a pilot with no spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from esper_ab.errors import DataError, bad_value
from esper_ab.stats._counts import STRATEGY_METRICS, strategy_metrics
from esper_ab.stats._lazy import sps
from esper_ab.stats._power import _clopper_pearson, replicates_for
from esper_ab.stats._quick import quick_verdict
from esper_ab.stats._resample import bootstrap_weights, nan_sd
from esper_ab.stats._simulate import SimulationDesign, simulate_counts
from esper_ab.stats._verdict import SelectionRule

MAX_PLANNED = 5_000  # replicates beyond which the simulation check is not run
MIN_SIMS = 20  # simulated tables per round: fewer cannot resolve a power of 0.8


@dataclass(frozen=True)
class VerdictPower:
    """How often the verdict names ``strategy`` the winner in simulated tables."""

    strategy: str
    n_replicates: int
    n_sims: int
    n_won: int
    power: float
    ci: tuple[float, float]
    kinds: dict[str, int]


@dataclass(frozen=True)
class ReplicatePlan:
    """The planned number of replicates and the evidence for it."""

    strategy: str
    n_replicates: int | None
    power: float
    ci: tuple[float, float]
    target_power: float
    analytic: int | None
    effect: float
    sd_per_replicate: float
    evaluated: tuple[tuple[int, float], ...]
    capped: bool = False
    message: str = ""


def _order(design: SimulationDesign, baseline: str) -> tuple[list[int], tuple[str, ...]]:
    names = [s.name for s in design.strategies]
    if baseline not in names:
        raise bad_value("baseline", baseline, f"use one of the design's strategies {names}")
    idx = [names.index(baseline)] + [i for i, n in enumerate(names) if n != baseline]
    return idx, tuple(names[i] for i in idx)


def verdict_power(
    design: SimulationDesign, *, strategy: str, baseline: str = "baseline",
    rule: SelectionRule | None = None, alpha: float = 0.05, n_replicates: int | None = None,
    n_sims: int = 200, n_perm: int = 500, n_boot: int = 100, seed: int = 0,
) -> VerdictPower:
    """Simulated P(the verdict is ``winner`` and names ``strategy``) at ``n_replicates``."""
    rule = rule or SelectionRule()
    if n_replicates is not None:
        design = design.with_replicates(n_replicates)
    idx, names = _order(design, baseline)
    if strategy not in names:
        raise bad_value("strategy", strategy, f"use one of the design's strategies {list(names)}")
    blueprints = tuple(sorted(design.blueprints))
    kinds = {"winner": 0, "not_better": 0, "undecided": 0}
    won = 0
    for i in range(n_sims):
        counts = simulate_counts(design, seed=seed * 1_000_003 + i)[:, idx]
        v = quick_verdict(counts, strategies=names, blueprints=blueprints, baseline=baseline,
                          rule=rule, alpha=alpha, n_perm=n_perm, n_boot=n_boot, seed=i)
        kinds[v.kind] += 1
        won += v.winner == strategy
    return VerdictPower(strategy=strategy, n_replicates=design.n_replicates, n_sims=n_sims,
                        n_won=won, power=won / n_sims, ci=_clopper_pearson(won, n_sims),
                        kinds=kinds)


def _pilot(design: SimulationDesign, idx: list[int], strategy_index: int, metric: str,
           n: int, seed: int) -> tuple[float, float]:
    counts = simulate_counts(design.with_replicates(n), seed=seed)[:, idx]
    j = STRATEGY_METRICS.index(metric)
    point = strategy_metrics(counts.sum(axis=0))
    w = bootstrap_weights(np.random.default_rng(seed), 400, n)
    boot = strategy_metrics((w @ counts.reshape(n, -1)).reshape((400,) + counts.shape[1:]))
    sd = float(nan_sd(boot[:, strategy_index, j] - boot[:, 0, j])) * math.sqrt(n)
    return float(point[strategy_index, j] - point[0, j]), sd


def _int_arg(name: str, value: object, low: int, high: int, what: str) -> None:
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool)
            and low <= value <= high):
        raise bad_value(name, value, f"use {what}, an integer in [{low}, {high}]")


def check_plan_arguments(
    *, alpha: float, target_power: float, n_sims: int, n_perm: int, n_boot: int,
    pilot_replicates: int, max_rounds: int, max_replicates: int, seed: int,
) -> None:
    """One clear error per out-of-range argument of :func:`plan_replicates` (its value and
    the range), before any simulation."""
    for name, v in (("alpha", alpha), ("target_power", target_power)):
        if not (isinstance(v, int | float | np.floating) and not isinstance(v, bool)
                and 0 < v < 1):
            raise bad_value(name, v, "use a number in the open range (0, 1), e.g. "
                            + ("0.05" if name == "alpha" else "0.8"))
    _int_arg("n_sims", n_sims, MIN_SIMS, 1_000_000, "simulated tables per round")
    _int_arg("n_perm", n_perm, 1, 1_000_000, "sign-flip permutations")
    _int_arg("n_boot", n_boot, 2, 1_000_000, "bootstrap resamples")
    _int_arg("pilot_replicates", pilot_replicates, 2, 1_000_000,
             "pilot replicates (a one-replicate pilot has no spread to measure)")
    _int_arg("max_rounds", max_rounds, 1, 100, "simulation rounds")
    _int_arg("max_replicates", max_replicates, 4, MAX_PLANNED, "the largest n to simulate")
    _int_arg("seed", seed, 0, 2**63 - 1, "a random seed")


def acceptance_bar(target_power: float, n_sims: int) -> float:
    """The simulated power a planned n must reach: the target plus 1.5 Monte Carlo SE, so an
    independent simulation at that n meets the target; never above 1."""
    return min(1.0, target_power + 1.5 * math.sqrt(target_power * (1 - target_power) / n_sims))


def plan_replicates(
    design: SimulationDesign, *, strategy: str, baseline: str = "baseline",
    rule: SelectionRule | None = None, alpha: float = 0.05, target_power: float = 0.8,
    n_sims: int = 200, n_perm: int = 500, n_boot: int = 100, pilot_replicates: int = 2000,
    max_rounds: int = 5, max_replicates: int = MAX_PLANNED, seed: int = 0,
) -> ReplicatePlan:
    """Replicates at which the verdict names ``strategy`` the winner with ``target_power``.

    The analytic n starts the search; if it passes, it is the answer. While the simulated
    power is under the bar, n grows (by the ratio of normal quantiles, at most doubling) until
    one passes; then the search narrows by bisection between the largest n that failed and
    the smallest that passed. The answer is the smallest n seen to pass, within
    ``max_rounds`` simulations."""
    rule = rule or SelectionRule()
    check_plan_arguments(alpha=alpha, target_power=target_power, n_sims=n_sims, n_perm=n_perm,
                         n_boot=n_boot, pilot_replicates=pilot_replicates,
                         max_rounds=max_rounds, max_replicates=max_replicates, seed=seed)
    idx, names = _order(design, baseline)
    if strategy not in names or strategy == baseline:
        raise bad_value("strategy", strategy, f"use a candidate of the design, one of "
                        f"{[n for n in names if n != baseline]}")
    effect, sd = _pilot(design, idx, names.index(strategy), rule.objective, pilot_replicates,
                        seed)
    if not (math.isfinite(sd) and sd > 0):
        raise DataError(f"the pilot of {pilot_replicates} replicates measured a per-replicate "
                        f"SD of {sd:.3g} for {strategy}: no spread to plan from; use more "
                        "pilot replicates (pilot_replicates=2000 typical)")
    m = max(1, len(names) - 1)
    analytic = replicates_for(effect, sd, alpha / m, target_power) if effect > 0 else None
    common = {"strategy": strategy, "target_power": target_power, "analytic": analytic,
              "effect": effect, "sd_per_replicate": sd}
    if analytic is None or analytic > max_replicates:
        why = ("the design plants no gain of it over the baseline" if not effect > 0 else
               f"the gain {effect:+.3g} (sd per replicate {sd:.3g}) needs more than "
               f"{max_replicates} replicates")
        return ReplicatePlan(n_replicates=None, power=float("nan"), ci=(float("nan"),) * 2,
                             evaluated=(), capped=True, message=f"{strategy}: {why}; plan for "
                             "a larger effect or use more seeds per replicate", **common)
    bar = acceptance_bar(target_power, n_sims)
    z_alpha = float(sps.norm.isf(alpha / (2 * m)))
    z_goal = float(sps.norm.ppf(min(bar, 0.999)))
    n = max(analytic, 4)
    failed, passed = 0, None   # largest n seen to fail, smallest seen to pass (with its result)
    seen = []
    for r in range(max_rounds):
        vp = verdict_power(design, strategy=strategy, baseline=baseline, rule=rule, alpha=alpha,
                           n_replicates=n, n_sims=n_sims, n_perm=n_perm, n_boot=n_boot,
                           seed=seed + 1 + r)
        seen.append((n, vp.power))
        if vp.power >= bar:
            passed = (n, vp)
        else:
            failed = max(failed, n)
        if passed is None:
            if n >= max_replicates:
                break
            p = min(max(vp.power, 0.5 / n_sims), 1 - 0.5 / n_sims)
            scale = ((z_goal + z_alpha) / max(float(sps.norm.ppf(p)) + z_alpha, 0.5)) ** 2
            n = min(max_replicates, max(n + 1, math.ceil(n * min(scale, 2.0))))
        else:
            if failed == 0 or passed[0] - failed <= 1:  # nothing below it failed yet: done
                break
            n = (failed + passed[0]) // 2
    if passed is not None:
        n_ok, vp = passed
        return ReplicatePlan(n_replicates=n_ok, power=vp.power, ci=vp.ci,
                             evaluated=tuple(seen), **common)
    last_n, last_p = seen[-1]
    return ReplicatePlan(
        n_replicates=None, power=last_p, ci=(float("nan"),) * 2, evaluated=tuple(seen),
        capped=True, message=f"{strategy}: simulated power {last_p:.2f} at {last_n} replicates "
        f"is still under {target_power:g} after {len(seen)} rounds: the fairness criterion or "
        "a degenerate gate may exclude it whatever the replicates", **common)
