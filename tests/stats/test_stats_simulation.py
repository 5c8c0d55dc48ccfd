"""The simulator plants what it says; the analytic power formula; pilot SD estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from esper_ab.errors import ConfigError
from esper_ab.stats import (
    SimulationDesign,
    StrategySpec,
    pilot_sd_per_replicate,
    power,
    power_from_pilot,
    simulate_decisions,
    validate_decisions,
)


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    design = SimulationDesign(
        blueprints=("a", "b", "c"), n_replicates=1500, seeds_per_cell=2,
        value_means=(0.5, 0.0, -0.5), value_sd=1.0, margin=0.0, replicate_correlation=0.4,
        unmeasured_rate=0.1,
        strategies=(StrategySpec("s1", (0.1, 0.5, 0.8), signal=0.6),
                    StrategySpec("s2", (0.5, 0.5, 0.5), signal=0.0)))
    return simulate_decisions(design, seed=0)


def test_table_passes_the_contract_and_is_deterministic(big):
    validate_decisions(big)
    d = SimulationDesign(blueprints=("a",), strategies=(StrategySpec("s", (0.5,)),), n_replicates=3)
    pd.testing.assert_frame_equal(simulate_decisions(d, seed=4), simulate_decisions(d, seed=4))
    assert not simulate_decisions(d, seed=4).equals(simulate_decisions(d, seed=5))


def test_planted_pass_rates_among_measured_seeds(big):
    for s, rates in (("s1", (0.1, 0.5, 0.8)), ("s2", (0.5, 0.5, 0.5))):
        g = big[(big.strategy == s) & big.statistic.notna()]
        got = g.groupby("blueprint")["passed"].mean().to_numpy()
        se = np.sqrt(np.asarray(rates) * (1 - np.asarray(rates)) / 2700)
        # Replicate effects inflate the variance by 1 + (m-1) icc with m=2 seeds per cell.
        assert np.all(np.abs(got - rates) < 4 * se * np.sqrt(1.4))


def test_unmeasured_seeds_are_nan_and_fail(big):
    miss = big.statistic.isna()
    assert miss.mean() == pytest.approx(0.1, abs=0.01)
    assert not big.loc[miss, "passed"].any()


def test_planted_value_structure_signal_and_replicate_correlation(big):
    s1 = big[big.strategy == "s1"]
    # Value means per blueprint; valuable = value >= margin.
    means = s1.groupby("blueprint")["value"].mean().to_numpy()
    np.testing.assert_allclose(means, (0.5, 0.0, -0.5), atol=0.06)
    assert (s1.valuable == (s1.value >= 0)).all()
    # The statistic's latent correlates with the value latent by `signal` within a blueprint.
    m = s1[s1.statistic.notna() & (s1.blueprint == "b")]
    assert np.corrcoef(m.statistic, m.value)[0, 1] == pytest.approx(0.6, abs=0.04)
    s2 = big[(big.strategy == "s2") & big.statistic.notna()]
    assert abs(np.corrcoef(s2.statistic, s2.value)[0, 1]) < 0.04
    # Intra-replicate correlation of the value between two different blueprints.
    wide = s1[s1.seed == 0].pivot(index="replicate", columns="blueprint", values="value")
    assert np.corrcoef(wide["a"], wide["c"])[0, 1] == pytest.approx(0.4, abs=0.06)


def test_copies_of_a_spec_differ_seed_by_seed_but_share_the_seeds():
    spec = StrategySpec("x", (0.5, 0.5), signal=0.3)
    d = SimulationDesign(blueprints=("a", "b"), n_replicates=50,
                         strategies=(spec, StrategySpec("y", (0.5, 0.5), signal=0.3)))
    df = simulate_decisions(d, seed=1)
    x, y = df[df.strategy == "x"].reset_index(), df[df.strategy == "y"].reset_index()
    assert (x.value == y.value).all()
    assert (x.passed != y.passed).any()


def test_design_validation_names_the_field():
    with pytest.raises(ConfigError, match="pass_rates"):
        SimulationDesign(blueprints=("a", "b"), strategies=(StrategySpec("s", (0.5,)),))
    with pytest.raises(ConfigError, match="signal"):
        StrategySpec("s", (0.5,), signal=2.0)


def test_power_formula_against_normal_approximation():
    # Large n: the t reference is close to the normal one, Phi(sqrt(n) d/s - z_{1-a/2}).
    est = power(effect=0.1, sd_per_replicate=0.5, n_replicates=200, alpha=0.05)
    normal = sps.norm.cdf(np.sqrt(200) * 0.2 - 1.959964) + sps.norm.cdf(-np.sqrt(200) * 0.2 - 1.959964)
    assert est.power == pytest.approx(normal, abs=0.005)
    n_normal = ((1.959964 + 0.841621) * 0.5 / 0.1) ** 2  # 196.2
    assert n_normal <= est.replicates_needed <= n_normal + 3
    # replicates_needed is the smallest n reaching the target power.
    at = power(effect=0.1, sd_per_replicate=0.5, n_replicates=est.replicates_needed)
    below = power(effect=0.1, sd_per_replicate=0.5, n_replicates=est.replicates_needed - 1)
    assert at.power >= 0.8 > below.power
    # A zero effect is not an error: the planner caps it and says why (issue 10).
    zero = power(effect=0.0, sd_per_replicate=1.0)
    assert zero.capped and "practically zero" in zero.message
    with pytest.raises(ConfigError, match="effect"):
        power(effect=float("nan"), sd_per_replicate=1.0)


def test_pilot_sd_matches_the_linearized_per_replicate_spread():
    design = SimulationDesign(
        blueprints=("a", "b"), n_replicates=300, seeds_per_cell=4,
        strategies=(StrategySpec("baseline", (0.3, 0.7), 0.2), StrategySpec("new", (0.5, 0.5), 0.6)))
    df = simulate_decisions(design, seed=3)
    diff, sd = pilot_sd_per_replicate(df, strategy="new", metric="balanced_accuracy", n_boot=2000)

    def influence(g):  # per-replicate linearized contribution to balanced accuracy
        val = g.valuable
        tp = (g.passed & val).groupby(g.replicate).sum()
        v = val.groupby(g.replicate).sum()
        tn = (~g.passed & ~val).groupby(g.replicate).sum()
        nv = (~val).groupby(g.replicate).sum()
        tpr, tnr = tp.sum() / v.sum(), tn.sum() / nv.sum()
        return 0.5 * ((tp - tpr * v) / v.mean() + (tn - tnr * nv) / nv.mean()), (tpr + tnr) / 2

    inf_new, ba_new = influence(df[df.strategy == "new"])
    inf_base, ba_base = influence(df[df.strategy == "baseline"])
    assert diff == pytest.approx(ba_new - ba_base)
    assert sd == pytest.approx((inf_new - inf_base).std(ddof=1), rel=0.08)
    est = power_from_pilot(df, strategy="new", metric="balanced_accuracy", effect=0.05)
    assert est.sd_per_replicate == pytest.approx(sd, rel=0.05)
    with pytest.raises(ConfigError, match="metric"):
        pilot_sd_per_replicate(df, strategy="new", metric="realized_utility")
