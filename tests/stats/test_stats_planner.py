"""The power planner: bounded at its edges, exact against a linear scan, and (slow) planning
for the whole verdict, fairness included, with simulated power >= 0.8 at the planned n."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from esper_ab.errors import ConfigError
from esper_ab.stats import (
    SimulationDesign,
    StrategySpec,
    plan_replicates,
    power,
    verdict_power,
)
from esper_ab.stats._power import MAX_REPLICATES, replicates_for


@pytest.mark.parametrize("effect", [-5.6e-17, 1e-9, 1e-5, 0.0])
def test_negligible_effects_are_capped_with_a_message_not_a_crash_or_a_loop(effect):
    est = power(effect=effect, sd_per_replicate=0.3)
    assert est.capped and est.replicates_needed == MAX_REPLICATES
    assert f"more than {MAX_REPLICATES} replicates" in est.message
    assert "practically zero" in est.message
    assert est.power == pytest.approx(0.05, abs=1e-6)  # no effect: power is the level


def test_non_finite_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="effect"):
        power(effect=float("inf"), sd_per_replicate=0.3)
    with pytest.raises(ConfigError, match="sd_per_replicate"):
        power(effect=0.1, sd_per_replicate=0.0)


def _linear_scan(effect: float, sd: float, alpha: float, target: float) -> int:
    """Smallest n >= 2 with noncentral-t power >= target, by brute force."""
    for n in range(2, 100_000):
        nc = np.sqrt(n) * abs(effect) / sd
        crit = sps.t.isf(alpha / 2, n - 1)
        if sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc) >= target:
            return n
    raise AssertionError("not found")


@pytest.mark.parametrize(("effect", "sd", "alpha", "target"),
                         [(0.1, 0.5, 0.05, 0.8), (-0.3, 0.4, 0.01, 0.9), (0.02, 0.3, 0.05, 0.8),
                          (2.0, 0.5, 0.05, 0.8)])
def test_bisection_finds_the_same_n_as_a_linear_scan(effect, sd, alpha, target):
    assert replicates_for(effect, sd, alpha, target) == _linear_scan(effect, sd, alpha, target)


def test_plan_for_no_planted_gain_is_capped_without_simulating():
    design = SimulationDesign(blueprints=("a", "b"), seeds_per_cell=2, strategies=(
        StrategySpec("baseline", tpr=(0.7, 0.7), fpr=(0.3, 0.3)),
        StrategySpec("same", tpr=(0.7, 0.7), fpr=(0.3, 0.3))))
    plan = plan_replicates(design, strategy="same", pilot_replicates=400, max_replicates=300)
    assert plan.capped and plan.n_replicates is None and plan.evaluated == ()
    assert "same:" in plan.message
    with pytest.raises(ConfigError, match="strategy"):
        plan_replicates(design, strategy="baseline")


def _design(n_blueprints: int) -> SimulationDesign:
    bps = tuple(f"bp{i}" for i in range(n_blueprints))
    return SimulationDesign(blueprints=bps, seeds_per_cell=2, strategies=(
        StrategySpec("baseline", tpr=(0.7,) * n_blueprints, fpr=(0.3,) * n_blueprints),
        StrategySpec("better", tpr=(0.82,) * n_blueprints, fpr=(0.22,) * n_blueprints)))


@pytest.mark.slow
@pytest.mark.parametrize("n_blueprints", [2, 4, 8])
def test_simulated_power_of_the_verdict_at_the_planned_n_is_at_least_the_target(n_blueprints):
    design = _design(n_blueprints)
    plan = plan_replicates(design, strategy="better", n_sims=120, seed=1)
    assert plan.n_replicates is not None and not plan.capped, plan
    # An independent simulation (other seeds) of the full verdict at the planned n.
    check = verdict_power(design, strategy="better", n_replicates=plan.n_replicates,
                          n_sims=200, seed=99)
    assert check.power >= 0.8, (plan, check)
