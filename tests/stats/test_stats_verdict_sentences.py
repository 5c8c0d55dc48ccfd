"""Every sentence of the verdict checked against the numbers it cites, on planted tables of
all three kinds (issue 22 item 1, stats side; issue 25 items 1-3): an undecided answer names
what blocks it (too few replicates for any p-value to reach alpha, multiplicity, fairness
undetermined, power) and a replicate count larger than the current one; intervals stay in
their parameter's range; every gap is labelled raw or debiased."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from planted_tables import planted_counts

from esper_ab.stats import SelectionRule, SimulationDesign, StrategySpec, analyze
from esper_ab.stats import simulate_decisions as sim
from esper_ab.stats._quick import quick_verdict
from esper_ab.stats._undecided import minimum_replicates, reachable_replicates

UB4 = [0.0, 0.6, 1.0, 1.0]
UB8 = [0.0, 0.02, 0.58, 0.98, 1.0, 1.0, 1.0, 1.0]
BP4, BP8 = ("a", "b", "c", "d"), tuple(f"bp{i}" for i in range(8))


def _verdict(tpr, fpr, *, R, K, table_seed, seed=0, rule=None, names=None, n_perm=500):
    counts = planted_counts(np.random.default_rng(table_seed), tpr=tpr, fpr=fpr,
                            n_replicates=R, seeds_per_cell=K)
    names = names or ("baseline",) + tuple(f"c{i}" for i in range(1, len(tpr)))
    return quick_verdict(counts, strategies=names, blueprints=BP4 if len(tpr[0]) == 4 else BP8,
                         baseline="baseline", rule=rule or SelectionRule(), n_perm=n_perm,
                         n_boot=200, seed=seed)


@pytest.fixture(scope="module")
def planted():
    return {
        "winner": _verdict([UB8, [0.9] * 8], [UB8, [0.3] * 8], R=60, K=6, table_seed=[3, 0]),
        "not_better": _verdict([UB4, [0.5, 0.95, 0.95, 0.95]], [UB4, [0.1] * 4], R=30, K=2,
                               table_seed=[2, 0]),
        "few_replicates": _verdict([UB4, [0.9] * 4], [UB4, [0.3] * 4], R=4, K=4,
                                   table_seed=[4, 0]),
        "fairness": _verdict([UB4, [0.9] * 4], [UB4, [0.3] * 4], R=30, K=1, table_seed=[5, 1]),
        "multiplicity": _verdict([UB4] + [[0.85] * 4] * 3, [UB4] + [[0.35] * 4] * 3, R=8, K=3,
                                 table_seed=[7, 10], seed=10, rule=SelectionRule(max_gap=1.0),
                                 n_perm=2000),
    }


def _sentences(v) -> list[str]:
    return [v.headline, *v.details, v.reason, *(c.why for c in v.candidates),
            *(t for c in v.candidates for t in c.blocker_text)]


def _num(text: str) -> float:
    return float(text)


def _check_common(v) -> None:
    for s in _sentences(v):
        assert "-0.000" not in s, s
        assert "np." not in s, s
        # every interval is ordered; a gap's interval lies in [0, 1]
        for m in re.finditer(r"(\w+) [+-]?[\d.]+[^\[]{0,60}?CI \[(-?[\d.]+), (-?[\d.]+)\]", s):
            lo, hi = _num(m.group(2)), _num(m.group(3))
            assert lo <= hi, s
            if m.group(1).endswith("_gap"):
                assert 0 <= lo and hi <= 1, s
        # every gap value is labelled: "<metric> 0.123 debiased" (raw values say "raw")
        for m in re.finditer(r"(equalized_odds_gap|equal_opportunity_gap|pass_rate_gap) "
                             r"([+-]?\d[\d.]*)(\S*)( \w+)?", s):
            assert m.group(4) in (" debiased",), s
    if v.kind == "undecided" and v.replicates_needed is not None:
        assert v.replicates_needed > v.n_replicates
        m = re.search(r"about (\d+) more replicates needed \((\d+) now, ~(\d+) in all\)", v.headline)
        if m:
            more, now, total = map(int, m.groups())
        else:
            m = re.search(r"at least (\d+) replicates in all are needed \((\d+) now\)", v.headline)
            assert m, v.headline
            total, now = map(int, m.groups())
            more = total - now
        assert (now, total, more) == (v.n_replicates, v.replicates_needed, total - now)
        assert v.more_replicates == more > 0


@pytest.mark.parametrize("key", ["winner", "not_better", "few_replicates", "fairness",
                                 "multiplicity"])
def test_every_sentence_agrees_with_the_numbers_it_cites(planted, key):
    v = planted[key]
    _check_common(v)
    kind = {"winner": "winner", "not_better": "not_better"}.get(key, "undecided")
    assert v.kind == kind, v.headline


def test_the_winner_is_fair_by_its_upper_ci_limit(planted):
    v = planted["winner"]
    (c,) = [c for c in v.candidates if c.strategy == v.winner]
    assert c.fairness == "fair" and c.gap_ci[1] <= v.rule.max_gap
    assert "upper CI limit <= 0.2" in v.details[0]
    m = re.search(r"90% CI \[([\d.]+), ([\d.]+)\]\): upper CI limit", v.details[0])
    assert m and float(m.group(2)) == pytest.approx(c.gap_ci[1], abs=5e-4)


def test_an_unfair_gate_is_excluded_by_its_lower_ci_limit(planted):
    v = planted["not_better"]
    (c,) = v.candidates
    assert c.fairness == "unfair" and c.status == "excluded" and c.gap_ci[0] > 0.2
    m = re.search(r"lower CI limit of equalized_odds_gap ([\d.]+) debiased \(raw ([\d.]+), "
                  r"90% CI \[([\d.]+), ([\d.]+)\]\) = ([\d.]+) > 0.2", c.why)
    assert m, c.why
    gap, raw, lo, hi, cited = map(float, m.groups())
    assert (gap, raw) == pytest.approx((c.gap, c.gap_raw), abs=5e-4)
    assert cited == lo == pytest.approx(c.gap_ci[0], abs=5e-4) and lo > 0.2


def test_too_few_replicates_give_no_definite_answer_and_say_why(planted):
    v = planted["few_replicates"]
    assert v.kind == "undecided" and v.blockers == ("min_replicates",)
    assert v.n_replicates == 4 and v.min_replicates == 6 == v.replicates_needed
    assert "at 4 replicates the exact sign-flip p-value cannot go below 2/16 = 0.125" in v.headline
    assert "no candidate can win below 6 replicates" in v.headline
    assert "at least 6 replicates in all are needed (4 now)" in v.headline


def test_a_degenerate_gate_from_one_replicate_is_undecided():
    # issue 25: "a table of 1 replicate and 4 seeds gives 'not better ... admits no seed'"
    design = SimulationDesign(blueprints=("a", "b"), n_replicates=1, seeds_per_cell=2, strategies=(
        StrategySpec("baseline", (0.5, 0.5)), StrategySpec("none", tpr=(0.0, 0.0), fpr=(0.0, 0.0))))
    v = analyze(sim(design, seed=0), n_boot=50, n_perm=50).verdict
    assert v.kind == "undecided" and v.winner is None and v.replicates_needed == 6
    (c,) = v.candidates
    assert "admits no seed" in c.why  # the degenerate gate is still named, not decided on


@pytest.mark.parametrize(("alpha", "m", "n"), [(0.05, 1, 6), (0.05, 3, 7), (0.01, 1, 8),
                                                (0.05, 8, 9)])
def test_the_minimum_is_where_the_exact_test_can_first_reach_alpha(alpha, m, n):
    # the exact sign-flip p over n replicates is at least 2 / 2**n; Holm multiplies by m
    assert reachable_replicates(alpha, m) == n
    assert m * 2 / 2 ** n < alpha <= m * 2 / 2 ** (n - 1)
    assert minimum_replicates(SelectionRule(), alpha, m) == n
    assert minimum_replicates(SelectionRule(require_significance=False), alpha, m) == 3


def test_multiplicity_is_named_with_both_p_values(planted):
    v = planted["multiplicity"]
    assert "multiplicity" in v.blockers
    m = re.search(r"(\w+): multiplicity: its gain's p = ([\d.]+) < 0.05, but Holm over 3 "
                  r"candidates adjusts it to ([\d.]+)", v.headline)
    assert m, v.headline
    c = next(c for c in v.candidates if c.strategy == m.group(1))
    assert float(m.group(2)) == pytest.approx(c.pvalue, rel=2e-3) and c.pvalue < 0.05
    assert float(m.group(3)) == pytest.approx(c.pvalue_adjusted, rel=2e-3)
    assert c.pvalue_adjusted >= 0.05


def test_undetermined_fairness_is_named_with_its_interval_and_a_count(planted):
    v = planted["fairness"]
    (c,) = v.candidates
    assert c.fairness == "undetermined" and "fairness" in c.blockers
    lo, hi = c.gap_ci
    assert lo <= 0.2 < hi
    m = re.search(r"90% CI \[([\d.]+), ([\d.]+)\] straddles the bound 0.2; ~(\d+) replicates "
                  r"would settle it", v.headline)
    assert m, v.headline
    assert (float(m.group(1)), float(m.group(2))) == pytest.approx((lo, hi), abs=5e-4)
    # the count: the CI half-width shrinks like 1/sqrt(n) until the bound is z_power SEs out
    z, zp = 1.6448536, 0.8416212
    se = (hi - c.gap) / z
    expected = math.ceil(30 * ((z + zp) * se / (0.2 - c.gap)) ** 2)
    assert int(m.group(3)) == pytest.approx(expected, abs=1) and expected > 30


def test_the_old_point_estimate_rule_is_kept_only_by_choice(planted):
    # With gap_bound="estimate" the same undetermined table is judged on the estimate alone.
    counts = planted_counts(np.random.default_rng([5, 1]), tpr=[UB4, [0.9] * 4],
                            fpr=[UB4, [0.3] * 4], n_replicates=30, seeds_per_cell=1)
    est = quick_verdict(counts, strategies=("baseline", "c1"), blueprints=BP4,
                        baseline="baseline", rule=SelectionRule(gap_bound="estimate"),
                        n_perm=500, n_boot=200)
    (c,) = est.candidates
    assert c.fairness in ("fair", "unfair") and est.kind != "undecided"
    assert SelectionRule().gap_bound == "ci_high"


def test_the_analysis_text_labels_its_gaps_and_prints_no_negative_zero():
    design = SimulationDesign(blueprints=BP4, n_replicates=8, seeds_per_cell=3, strategies=(
        StrategySpec("baseline", (0.5,) * 4), StrategySpec("same", (0.5,) * 4)))
    a = analyze(sim(design, seed=0), n_boot=100, n_perm=100)
    text = a.format_table()
    assert "-0.000" not in text
    assert "equalized_odds_gap debiased [95% CI]" in text and "equalized_odds_gap_raw" in text
    assert "equalized_odds_gap debiased vs baseline" in text


def test_when_every_candidate_is_unfair_the_headline_also_says_whether_the_margin_holds():
    """The flagship's situation: every candidate is excluded as unfair. The headline then
    says too whether a gain of ``margin`` is ruled out for all of them, citing the largest
    upper limit, which is checked against each candidate's own interval."""
    rule = SelectionRule()
    # candidates with the baseline's own (unfair) rates: excluded, and no gain
    same = _verdict([UB4, UB4, UB4], [UB4, UB4, UB4], R=30, K=2, table_seed=[11, 0],
                    rule=rule)
    assert same.kind == "not_better" and all(c.status == "excluded" for c in same.candidates)
    uppers = {c.strategy: c.equivalence_ci[1] for c in same.candidates}
    assert all(u < rule.margin for u in uppers.values())
    m = re.search(rf"; and none gains {rule.margin:g} or more in balanced_accuracy either "
                  r"\(largest upper 90% CI limit ([+-][\d.]+), (\w+)\)", same.headline)
    assert m, same.headline
    assert m.group(2) == max(uppers, key=uppers.get)
    assert float(m.group(1)) == pytest.approx(max(uppers.values()), abs=5e-4)
    _check_common(same)
    # an unfair candidate that gains a lot: excluded, but the margin is not ruled out for it,
    # and the headline claims nothing about the margin
    big = _verdict([UB4, [0.5, 0.95, 0.95, 0.95]], [UB4, [0.1] * 4], R=30, K=2,
                   table_seed=[2, 0])
    (c,) = big.candidates
    assert c.status == "excluded" and not c.not_better and c.equivalence_ci[1] >= rule.margin
    assert "none gains" not in big.headline
