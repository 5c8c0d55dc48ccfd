"""The verdict: a winner, "not better than the baseline", or "undecided: N more replicates".

A candidate is *eligible* when all of these hold (each can be switched by the rule):

- it is not **degenerate**: it admits at least one seed, not every seed, and at least one
  valuable seed;
- **fairness, absolute**: its debiased ``fairness_metric`` (see ``_fairness``) is at most
  ``max_gap`` (the point estimate, or with ``gap_bound="ci_high"`` its upper CI limit);
- **fairness, relative** (``fairness_vs_baseline``): it is not less fair than the baseline,
  by the one-sided sign-flip test over replicates at level alpha;
- **gain** (``require_significance``): its objective beats the baseline's with a
  Holm-adjusted sign-flip p < alpha.

Then the kind is:

- ``winner``: the eligible candidate with the best objective;
- ``not_better``: no candidate can still win: each is excluded (degenerate, unfair, less fair
  than the baseline) or its gain is shown to be below ``margin``: the upper end of the
  (1 − 2 alpha) CI of the difference (diff + z_{1-alpha} SE, SE from the cluster bootstrap)
  is under ``margin``, an equivalence (TOST-style non-superiority) statement;
- ``undecided``: some candidate is neither; the analytic planner (``_power``) at the observed
  effect and SE says how many replicates would decide it (detect the gain at
  ``target_power``, or show it under the margin, whichever comes first). A candidate whose
  fairness gap is undefined (fewer than 2 blueprints with ``min_valuable`` valuable and
  ``min_non_valuable`` non-valuable seeds) is open too unless its gain is shown under the
  margin: its fairness is unknown, not shown bad, and the verdict says that more seeds with
  known value (replicates, slots) are needed rather than a replicate count.

Error rates, measured by simulation (tests/stats/test_stats_verdict_sim.py): a fair, better
gate wins in >= 90% of tables; a gate with a gap >= 0.35 wins in <= 5%; in an A/A comparison
a winner is declared in <= 5% (the sign-flip test's level, Holm over candidates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import pandas as pd
from scipy import stats as sps

from esper_ab.errors import bad_value
from esper_ab.stats._fairness import FairnessTable
from esper_ab.stats._paired import metric_test_name
from esper_ab.stats._power import MAX_REPLICATES, replicates_for
from esper_ab.stats._results import TestResult
from esper_ab.stats._verdict_text import (
    exclusion_text,
    gain_kind,
    headline_for,
    reason_for,
)

Objective = Literal["balanced_accuracy", "mcc", "realized_utility"]
FairnessMetric = Literal["equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap"]
GapBound = Literal["estimate", "ci_high"]
VerdictKind = Literal["winner", "not_better", "undecided"]
NO_WINNER = "no strategy beats the baseline"


@dataclass(frozen=True)
class SelectionRule:
    """What a winner must satisfy (see the module docstring). ``margin`` is the equivalence
    margin of "not better", in the objective's units (set your own for realized utility)."""

    objective: Objective = "balanced_accuracy"
    fairness_metric: FairnessMetric = "equalized_odds_gap"
    max_gap: float = 0.2
    gap_bound: GapBound = "estimate"
    require_significance: bool = True
    alpha: float | None = None
    fairness_vs_baseline: bool = True
    min_valuable: int = 10
    min_non_valuable: int = 10
    margin: float = 0.05
    target_power: float = 0.8

    def __post_init__(self) -> None:
        if self.objective not in ("balanced_accuracy", "mcc", "realized_utility"):
            raise bad_value("objective", self.objective,
                            "use 'balanced_accuracy', 'mcc' or 'realized_utility'")
        if self.fairness_metric not in ("equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap"):
            raise bad_value("fairness_metric", self.fairness_metric,
                            "use 'equalized_odds_gap', 'equal_opportunity_gap' or 'pass_rate_gap'")
        if not (isinstance(self.max_gap, int | float) and self.max_gap >= 0):
            raise bad_value("max_gap", self.max_gap, "use a gap bound >= 0 (1.0 disables it)")
        if self.gap_bound not in ("estimate", "ci_high"):
            raise bad_value("gap_bound", self.gap_bound, "use 'estimate' or 'ci_high'")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise bad_value("alpha", self.alpha, "use a level in (0, 1), e.g. 0.05")
        for name in ("min_valuable", "min_non_valuable"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise bad_value(name, v, "use a seed count >= 1 (10 typical)")
        if not (isinstance(self.margin, int | float) and self.margin > 0):
            raise bad_value("margin", self.margin, "use a positive equivalence margin, e.g. 0.05")
        if not 0 < self.target_power < 1:
            raise bad_value("target_power", self.target_power, "use a power in (0, 1), e.g. 0.8")


@dataclass(frozen=True)
class Candidate:
    """How one strategy fared against the rule (gaps are the debiased ``fairness_metric``)."""

    strategy: str
    objective_value: float
    difference: float
    ci: tuple[float, float] | None
    pvalue: float
    pvalue_adjusted: float
    gap: float
    gap_ci: tuple[float, float]
    gap_ok: bool
    significant: bool
    gap_raw: float = float("nan")
    gap_vs_baseline: float = float("nan")
    gap_vs_baseline_pvalue: float = float("nan")
    fair_vs_baseline_ok: bool = True
    degenerate: str = ""
    standard_error: float = float("nan")
    equivalence_ci: tuple[float, float] = (float("nan"), float("nan"))
    not_better: bool = False
    matched_difference: float = float("nan")
    matched_ci: tuple[float, float] = (float("nan"), float("nan"))
    gain_kind: str = ""
    gain_words: str = ""
    pass_rate: float = float("nan")
    status: str = ""            # eligible / not_better / excluded / open
    why: str = ""
    replicates_needed: int | None = None

    @property
    def eligible(self) -> bool:
        return not self.degenerate and self.gap_ok and self.fair_vs_baseline_ok and self.significant


@dataclass(frozen=True)
class Verdict:
    """The answer and why, with the numbers. ``headline`` is one line for the top of any
    output; ``summary_lines()`` a few more; ``reason`` the whole explanation."""

    winner: str | None
    reason: str
    baseline: str
    rule: SelectionRule
    alpha: float
    candidates: tuple[Candidate, ...] = ()
    kind: VerdictKind = "not_better"
    headline: str = ""
    details: tuple[str, ...] = ()
    n_replicates: int = 0
    replicates_needed: int | None = None
    left_out: Mapping[str, str] = field(default_factory=dict)

    @property
    def more_replicates(self) -> int | None:
        if self.replicates_needed is None:
            return None
        return max(self.replicates_needed - self.n_replicates, 1)

    def summary_lines(self) -> list[str]:
        return [self.headline, *self.details]

    def to_dict(self) -> dict[str, object]:
        def clean(v: object) -> object:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            return v

        cands = []
        for c in self.candidates:
            d = {k: clean(v) for k, v in asdict(c).items()}
            d["eligible"] = c.eligible
            cands.append(d)
        return {"winner": self.winner, "kind": self.kind, "headline": self.headline,
                "summary": self.summary_lines(), "reason": self.reason,
                "baseline": self.baseline, "alpha": self.alpha, "rule": asdict(self.rule),
                "n_replicates": self.n_replicates, "replicates_needed": self.replicates_needed,
                "more_replicates": self.more_replicates, "left_out": dict(self.left_out),
                "candidates": cands}


def _f(x: float) -> float:
    return float(x) if x is not None else float("nan")


def _degenerate(row: pd.Series) -> str:
    return degenerate_reason(int(row["n"]), float(row["pass_rate"]), float(row["tpr"]))


def degenerate_reason(n: int, rate: float, tpr: float) -> str:
    """Why a gate with ``n`` judged seeds, pass rate ``rate`` and TPR ``tpr`` is degenerate
    (it admits no seed, every seed, or no valuable seed: it can never win), or ""."""
    if not n or rate == 0:
        return f"admits no seed (0 of {n})"
    if rate == 1:
        return f"admits every seed ({n} of {n})"
    if not math.isfinite(tpr):
        return "admits no valuable seed (the table has no valuable seed)"
    if tpr == 0:
        return "admits no valuable seed"
    return ""


def _replicates_needed(c: Candidate, rule: SelectionRule, alpha: float, m: int, R: int,
                       gap_open: bool) -> int | None:
    """Replicates (in all) at which the open candidate would be decided, or None past the cap."""
    needs = []
    if not c.significant:
        sd = c.standard_error * math.sqrt(R)
        win = replicates_for(c.difference, sd, alpha / m, rule.target_power) \
            if c.difference > 0 else None
        below = replicates_for(rule.margin - c.difference, sd, 2 * alpha, rule.target_power) \
            if c.difference < rule.margin else None
        options = [n for n in (win, below) if n is not None]
        needs.append(min(options) if options else None)
    if gap_open:
        half = c.gap_ci[1] - c.gap
        room = rule.max_gap - c.gap
        needs.append(math.ceil(R * (half / room) ** 2) if room > 0 and half > 0 else None)
    if any(n is None for n in needs) or not needs:
        return None
    n = max(needs)
    return n if n <= MAX_REPLICATES else None


def decide(
    *, disparities: pd.DataFrame, tests: Sequence[TestResult], fairness: FairnessTable,
    overall: pd.DataFrame, matched_tests: Sequence[TestResult], baseline: str,
    rule: SelectionRule, alpha: float, n_replicates: int, matched_label: str,
) -> Verdict:
    """Apply ``rule`` to an analysis' tables (see :func:`esper_ab.stats.analyze`)."""
    alpha = rule.alpha if rule.alpha is not None else alpha
    obj, fair = rule.objective, rule.fairness_metric
    by_strategy = {t.strategy: t for t in tests if t.name == metric_test_name(obj) and t.blueprint is None}
    matched = {t.strategy: t for t in matched_tests if t.name == metric_test_name(obj)}
    ft = fairness.table
    base_value = float(disparities.loc[baseline, obj])
    z_eq = float(sps.norm.isf(alpha))
    competing = [s for s in disparities.index if not (s == baseline and rule.require_significance)]
    m = max(1, sum(1 for s in competing if s != baseline))
    cands = []
    for s in competing:
        value = float(disparities.loc[s, obj])
        t = by_strategy.get(s)
        p = t.pvalue if t else float("nan")
        p_adj = t.pvalue_adjusted if t and t.pvalue_adjusted is not None else float("nan")
        se = t.standard_error if t else float("nan")
        diff = value - base_value
        gap, lo, hi = (float(ft.loc[s, c]) for c in (fair, f"{fair}_ci_low", f"{fair}_ci_high"))
        bound_value = gap if rule.gap_bound == "estimate" else hi
        gap_ok = bool(bound_value <= rule.max_gap)
        # The point estimate decides it out; an upper limit cannot fall below it. An undefined
        # gap (too few valuable / non-valuable seeds per blueprint) decides nothing: fairness
        # is unknown, so the candidate stays open unless its gain settles it.
        gap_undefined = not math.isfinite(gap)
        gap_out = not gap_undefined and not (
            gap <= rule.max_gap if rule.gap_bound == "estimate" else gap < rule.max_gap)
        p_less = float(ft.loc[s, f"{fair}_vs_baseline_p"]) if s != baseline else float("nan")
        fair_rel = not (rule.fairness_vs_baseline and p_less < alpha)
        significant = (diff > 0 and p_adj < alpha) if rule.require_significance else True
        eq = (diff - z_eq * se, diff + z_eq * se)
        not_better = bool(rule.require_significance and eq[1] < rule.margin)
        degenerate = _degenerate(overall.loc[s]) if s != baseline else ""
        mt = matched.get(s)
        md = mt.statistic if mt else float("nan")
        mci = mt.ci if mt and mt.ci else (float("nan"), float("nan"))
        kind, words = gain_kind(diff, md, mci, float(overall.loc[s, "pass_rate"]),
                                float(overall.loc[baseline, "pass_rate"]), matched_label)
        c = Candidate(
            strategy=str(s), objective_value=value, difference=diff, ci=t.ci if t else None,
            pvalue=p, pvalue_adjusted=p_adj, gap=gap, gap_ci=(lo, hi), gap_ok=gap_ok,
            significant=bool(significant), gap_raw=float(ft.loc[s, f"{fair}_raw"]),
            gap_vs_baseline=_f(ft.loc[s, f"{fair}_vs_baseline"]), gap_vs_baseline_pvalue=p_less,
            fair_vs_baseline_ok=fair_rel, degenerate=degenerate, standard_error=se,
            equivalence_ci=eq, not_better=not_better, matched_difference=md, matched_ci=mci,
            gain_kind=kind, gain_words=words, pass_rate=float(overall.loc[s, "pass_rate"]))
        excluded = bool(degenerate) or gap_out or not fair_rel or (t is not None and math.isnan(p))
        if c.eligible:
            status = "eligible"
        elif excluded:
            status = "excluded"
        elif not_better:
            status = "not_better"
        else:
            status = "open"
        why = exclusion_text(c, rule, alpha)
        needed = (_replicates_needed(c, rule, alpha, m, n_replicates,
                                     gap_open=not gap_ok and not gap_out)
                  if status == "open" and not gap_undefined else None)
        cands.append(replace(c, status=status, why=why, replicates_needed=needed))
    eligible = sorted((c for c in cands if c.status == "eligible"),
                      key=lambda c: (-c.objective_value, c.strategy))
    open_ = [c for c in cands if c.status == "open" and c.strategy != baseline]
    best = eligible[0] if eligible else None
    if best is not None and best.strategy != baseline:
        kind: VerdictKind = "winner"
        needed = None
    elif open_ and rule.require_significance:
        kind = "undecided"
        finite = [c.replicates_needed for c in open_ if c.replicates_needed is not None]
        needed = min(finite) if finite else None
    else:
        kind, needed = "not_better", None
    left_out, left_out_text = fairness.left_out(fair), fairness.left_out_text(fair)
    headline, details = headline_for(kind, best, cands, baseline=baseline, rule=rule,
                                     alpha=alpha, base_value=base_value, n_replicates=n_replicates,
                                     needed=needed, left_out=left_out_text)
    reason = reason_for(kind, best, cands, baseline=baseline, rule=rule, alpha=alpha,
                        base_value=base_value, left_out=left_out_text)
    return Verdict(winner=best.strategy if kind == "winner" and best else None, reason=reason,
                   baseline=baseline, rule=rule, alpha=alpha, candidates=tuple(cands), kind=kind,
                   headline=headline, details=tuple(details), n_replicates=n_replicates,
                   replicates_needed=needed, left_out=left_out)
