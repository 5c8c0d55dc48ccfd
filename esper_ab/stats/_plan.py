"""Planning a study for the verdict itself: how many replicates until a planted better gate
is declared the winner with the target probability, fairness criterion included.

:func:`plan_replicates` starts from the analytic planner (``_power``: noncentral t at the
objective's effect and per-replicate SD, measured on a large simulated pilot, Holm-adjusted
alpha for the design's candidates) and checks the answer by simulating the whole verdict
(:func:`quick_verdict`: sign-flip test, Holm, degenerate gates, the debiased fairness bound
and the paired fairness test) at the planned n. Where the simulated power falls short it
rescales n by the ratio of normal quantiles and simulates again; the planned n is the first
whose simulated power clears the target by 1.5 Monte Carlo SE, so that an independent
simulation at that n meets the target. Every loop is bounded: at most ``max_rounds``
simulations, and ``max_replicates`` (capped with a message) for effects too small to plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from esper_ab.errors import bad_value
from esper_ab.stats._counts import STRATEGY_METRICS, strategy_metrics
from esper_ab.stats._power import _clopper_pearson, replicates_for
from esper_ab.stats._quick import quick_verdict
from esper_ab.stats._resample import bootstrap_weights, nan_sd
from esper_ab.stats._simulate import SimulationDesign, simulate_counts
from esper_ab.stats._verdict import SelectionRule

MAX_PLANNED = 5_000  # replicates beyond which the simulation check is not run


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


def plan_replicates(
    design: SimulationDesign, *, strategy: str, baseline: str = "baseline",
    rule: SelectionRule | None = None, alpha: float = 0.05, target_power: float = 0.8,
    n_sims: int = 200, n_perm: int = 500, n_boot: int = 100, pilot_replicates: int = 2000,
    max_rounds: int = 5, max_replicates: int = MAX_PLANNED, seed: int = 0,
) -> ReplicatePlan:
    """Replicates at which the verdict names ``strategy`` the winner with ``target_power``."""
    rule = rule or SelectionRule()
    if not 0 < target_power < 1:
        raise bad_value("target_power", target_power, "use a power in (0, 1), e.g. 0.8")
    idx, names = _order(design, baseline)
    if strategy not in names or strategy == baseline:
        raise bad_value("strategy", strategy, f"use a candidate of the design, one of "
                        f"{[n for n in names if n != baseline]}")
    effect, sd = _pilot(design, idx, names.index(strategy), rule.objective, pilot_replicates,
                        seed)
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
    safety = 1.5 * math.sqrt(target_power * (1 - target_power) / n_sims)
    z_alpha = float(sps.norm.isf(alpha / (2 * m)))
    z_goal = float(sps.norm.ppf(min(target_power + safety, 0.999)))
    n, seen = max(analytic, 4), []
    for r in range(max_rounds):
        vp = verdict_power(design, strategy=strategy, baseline=baseline, rule=rule, alpha=alpha,
                           n_replicates=n, n_sims=n_sims, n_perm=n_perm, n_boot=n_boot,
                           seed=seed + 1 + r)
        seen.append((n, vp.power))
        if vp.power >= target_power + safety:
            return ReplicatePlan(n_replicates=n, power=vp.power, ci=vp.ci,
                                 evaluated=tuple(seen), **common)
        p = min(max(vp.power, 0.5 / n_sims), 1 - 0.5 / n_sims)
        scale = ((z_goal + z_alpha) / max(float(sps.norm.ppf(p)) + z_alpha, 0.5)) ** 2
        n = min(max_replicates, max(n + 1, math.ceil(n * min(scale, 4.0))))
        if seen[-1][0] == max_replicates:
            break
    last_n, last_p = seen[-1]
    return ReplicatePlan(
        n_replicates=None, power=last_p, ci=(float("nan"),) * 2, evaluated=tuple(seen),
        capped=True, message=f"{strategy}: simulated power {last_p:.2f} at {last_n} replicates "
        f"is still under {target_power:g} after {len(seen)} rounds: the fairness criterion or "
        "a degenerate gate may exclude it whatever the replicates", **common)
