"""The verdict's error rates against planted truths (issue 10 "Done when"), simulated with the
counts-only verdict (the same decision code as analyze)."""

from __future__ import annotations

import pytest

from esper_ab.stats import (
    SelectionRule,
    SimulationDesign,
    StrategySpec,
    pilot_sd_per_replicate,
    simulate_decisions,
    verdict_power,
)
from esper_ab.stats._power import replicates_for

pytestmark = pytest.mark.slow
B8 = tuple(f"bp{i}" for i in range(8))
# An unfair baseline in the style of the probe (DOMAIN.md §4): some blueprints never pass,
# most always do; balanced accuracy about 0.5.
UNFAIR_BASELINE = StrategySpec("baseline", (0.0, 0.02, 0.58, 0.98, 1.0, 1.0, 1.0, 1.0), signal=0.3)


def _against_baseline(candidate: StrategySpec, *, seeds: int = 1, n: int = 60) -> SimulationDesign:
    return SimulationDesign(blueprints=B8, n_replicates=n, seeds_per_cell=seeds,
                            strategies=(UNFAIR_BASELINE, candidate))


def test_a_fair_better_gate_wins_at_least_90_percent():
    # 8 blueprints x 60 replicates, TPR 0.8 / FPR 0.2 in every blueprint, 4 seeds per cell
    # (about 120 seeds per class and blueprint). The fairness bound applies to the gap's
    # upper 90% CI limit: at one seed per cell (30 per class) that CI is about [0, 0.3] for
    # a fair gate, which is then undecided (fairness undetermined), not crowned.
    vp = verdict_power(_against_baseline(StrategySpec("cand", tpr=(0.8,) * 8, fpr=(0.2,) * 8),
                                         seeds=4),
                       strategy="cand", n_sims=200, seed=11)
    assert vp.power >= 0.90, vp
    assert vp.kinds["not_better"] <= 0.03 * vp.n_sims, vp


@pytest.mark.parametrize(("tpr", "seeds"), [
    ((0.97,) * 4 + (0.62,) * 4, 1),   # a gap of 0.35 between two halves, 30 seeds per class
    ((0.95,) * 7 + (0.60,), 2),       # one blueprint 0.35 below the others, 60 per class
], ids=["halves", "one-outlier"])
def test_an_unfair_gate_that_is_more_accurate_wins_at_most_5_percent(tpr, seeds):
    design = _against_baseline(StrategySpec("cand", tpr=tpr, fpr=(0.1,) * 8), seeds=seeds)
    vp = verdict_power(design, strategy="cand", n_sims=150, seed=12)
    assert vp.power <= 0.05, vp
    # It is more accurate and fairer than the baseline: only the absolute bound stops it,
    # as unfair (lower CI limit over the bound: not better) or undetermined (undecided).
    assert vp.kinds["not_better"] + vp.kinds["undecided"] >= 0.95 * vp.n_sims, vp
    assert vp.kinds["not_better"] >= 0.5 * vp.n_sims, vp


def test_a_gate_that_admits_nothing_never_wins():
    design = SimulationDesign(blueprints=B8[:4], n_replicates=30, seeds_per_cell=3, strategies=(
        StrategySpec("baseline", (0.5,) * 4, signal=-0.6),  # worse than chance
        StrategySpec("none", tpr=(0.0,) * 4, fpr=(0.0,) * 4)))
    lax = SelectionRule(max_gap=1.0, fairness_vs_baseline=False)
    for rule in (SelectionRule(), lax):
        vp = verdict_power(design, strategy="none", rule=rule, n_sims=40, seed=13)
        assert vp.n_won == 0 and vp.kinds["winner"] == 0, vp


def test_aa_rarely_declares_a_winner_and_says_not_better_at_the_planned_n():
    fair = StrategySpec("baseline", tpr=(0.75,) * 4, fpr=(0.25,) * 4)
    design = SimulationDesign(blueprints=B8[:4], seeds_per_cell=4, n_replicates=400,
                              strategies=(fair, StrategySpec("copy", fair.pass_rates,
                                                             tpr=fair.tpr, fpr=fair.fpr)))
    _, sd = pilot_sd_per_replicate(simulate_decisions(design, seed=5), strategy="copy",
                                   n_boot=500)
    rule = SelectionRule()
    planned = replicates_for(rule.margin, sd, 0.05, rule.target_power)  # to detect the margin
    assert planned is not None and 20 <= planned <= 400
    vp = verdict_power(design, strategy="copy", n_replicates=planned, n_sims=200, seed=14)
    assert vp.kinds["winner"] / vp.n_sims <= 0.05, vp
    assert vp.kinds["not_better"] / vp.n_sims >= 0.80, vp
