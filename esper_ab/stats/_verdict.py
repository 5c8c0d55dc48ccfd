"""The verdict: a winner, "not better than the baseline", or "undecided" (with what blocks it).

A candidate is *eligible* when all of these hold (each can be switched by the rule):

- it is not **degenerate**: it admits at least one seed, not every seed, and at least one
  valuable seed;
- **fairness, absolute**, judged with its uncertainty (``gap_bound="ci_high"``, the
  default): the debiased ``fairness_metric`` (see ``_fairness``) is *fair* when the upper
  limit of its (1 − 2 alpha) CI (estimate ± z_{1-alpha} bootstrap SE, within [0, 1]) is at
  most ``max_gap``, *unfair* when the lower limit is over it, and *undetermined* in between:
  two one-sided tests at level alpha, like the equivalence statement on the gain. ``gap_bound="estimate"`` compares the point estimate with the
  bound instead: an explicit, less conservative choice, which calls a noisy gap fair or
  unfair on its estimate alone;
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
- ``undecided``: some candidate is neither, for a reason the verdict names (``_undecided``):
  too few replicates for any definite answer, multiplicity, too few seeds of known value for
  the gap, fairness undetermined, or power; with the replicates that would decide it (always
  more than the current number) or none.

No definite verdict, degenerate included, comes from fewer replicates than the minimum of
``_undecided.minimum_replicates``: the fewest at which the exact sign-flip test, Holm over
the candidates, can reach alpha (6 at alpha 0.05 with one candidate), and at least
``min_replicates``.

Error rates, measured by simulation (tests/stats/test_stats_verdict_sim.py and the planted
tables with replicate and cell effects of tests/stats/test_stats_fairness_sim.py): a fair,
better gate wins in >= 90% of tables at 8 blueprints x 60 replicates; a fair, better gate is
called not better in <= 3%, an unfair one crowned in <= 5% at 4 x 30; in an A/A comparison a
winner is declared in <= 5% (the sign-flip test's level, Holm over candidates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import pandas as pd

from esper_ab.errors import bad_value
from esper_ab.stats._fairness import FairnessTable
from esper_ab.stats._lazy import sps
from esper_ab.stats._paired import metric_test_name
from esper_ab.stats._results import TestResult
from esper_ab.stats._undecided import minimum_replicates, open_reasons
from esper_ab.stats._verdict_text import (
    exclusion_text,
    gain_kind,
    headline_for,
    reason_for,
)

Objective = Literal["balanced_accuracy", "mcc", "realized_utility"]
FairnessMetric = Literal["equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap"]
GapBound = Literal["ci_high", "estimate"]
Fairness = Literal["fair", "unfair", "undetermined", "unknown", ""]
VerdictKind = Literal["winner", "not_better", "undecided"]
NO_WINNER = "no strategy beats the baseline"
# The range of a difference of two values of each objective (CIs are clipped to it).
_DIFF_RANGE = {"balanced_accuracy": 1.0, "mcc": 2.0}


@dataclass(frozen=True)
class SelectionRule:
    """What a winner must satisfy (see the module docstring). ``margin`` is the equivalence
    margin of "not better", in the objective's units (set your own for realized utility)."""

    objective: Objective = "balanced_accuracy"
    fairness_metric: FairnessMetric = "equalized_odds_gap"
    max_gap: float = 0.2
    gap_bound: GapBound = "ci_high"
    require_significance: bool = True
    alpha: float | None = None
    fairness_vs_baseline: bool = True
    min_valuable: int = 10
    min_non_valuable: int = 10
    margin: float = 0.05
    target_power: float = 0.8
    min_replicates: int = 3

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
        if not (isinstance(self.min_replicates, int) and self.min_replicates >= 2):
            raise bad_value("min_replicates", self.min_replicates,
                            "use a replicate count >= 2 (3 typical)")
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
    fairness: Fairness = ""     # fair / unfair / undetermined / unknown (gap undefined)
    blockers: tuple[str, ...] = ()      # what keeps an open candidate open (codes)
    blocker_text: tuple[str, ...] = ()  # the same, one sentence each

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
    min_replicates: int = 0
    blockers: tuple[str, ...] = ()
    rates_entered: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing_replicates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def more_replicates(self) -> int | None:
        """Replicates to add (``replicates_needed`` is always more than ``n_replicates``)."""
        if self.replicates_needed is None:
            return None
        return self.replicates_needed - self.n_replicates

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
                "min_replicates": self.min_replicates, "blockers": list(self.blockers),
                "rates_entered": {b: list(r) for b, r in self.rates_entered.items()},
                "missing_replicates": {s: list(r) for s, r in self.missing_replicates.items()},
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


def fairness_state(gap: float, ci: tuple[float, float], rule: SelectionRule) -> Fairness:
    """fair / unfair / undetermined (CI straddling the bound) / unknown (gap undefined)."""
    if not math.isfinite(gap):
        return "unknown"
    if rule.gap_bound == "estimate":
        return "fair" if gap <= rule.max_gap else "unfair"
    lo, hi = ci
    if math.isfinite(hi) and hi <= rule.max_gap:
        return "fair"
    if math.isfinite(lo) and lo > rule.max_gap:
        return "unfair"
    return "undetermined"


def decide(
    *, disparities: pd.DataFrame, tests: Sequence[TestResult], fairness: FairnessTable,
    overall: pd.DataFrame, matched_tests: Sequence[TestResult], baseline: str,
    rule: SelectionRule, alpha: float, n_replicates: int, matched_label: str,
    missing_replicates: Mapping[str, tuple[str, ...]] | None = None,
) -> Verdict:
    """Apply ``rule`` to an analysis' tables (see :func:`esper_ab.stats.analyze`)."""
    alpha = rule.alpha if rule.alpha is not None else alpha
    obj, fair = rule.objective, rule.fairness_metric
    by_strategy = {t.strategy: t for t in tests if t.name == metric_test_name(obj) and t.blueprint is None}
    matched = {t.strategy: t for t in matched_tests if t.name == metric_test_name(obj)}
    ft = fairness.table
    base_value = float(disparities.loc[baseline, obj])
    z_eq = float(sps.norm.isf(alpha))
    lim = _DIFF_RANGE.get(obj, math.inf)
    competing = [s for s in disparities.index if not (s == baseline and rule.require_significance)]
    m = max(1, sum(1 for s in competing if s != baseline))
    # a table with no candidate needs no data to answer; otherwise no definite answer below
    minimum = minimum_replicates(rule, alpha, m) if any(s != baseline for s in competing) else 1
    cands = []
    for s in competing:
        value = float(disparities.loc[s, obj])
        t = by_strategy.get(s)
        p = t.pvalue if t else float("nan")
        p_adj = t.pvalue_adjusted if t and t.pvalue_adjusted is not None else float("nan")
        se = t.standard_error if t else float("nan")
        diff = value - base_value
        gap, gap_se = float(ft.loc[s, fair]), float(ft.loc[s, f"{fair}_se"])
        lo, hi = min(max(gap - z_eq * gap_se, 0.0), 1.0), min(max(gap + z_eq * gap_se, 0.0), 1.0)
        state = fairness_state(gap, (lo, hi), rule)
        p_less = float(ft.loc[s, f"{fair}_vs_baseline_p"]) if s != baseline else float("nan")
        fair_rel = not (rule.fairness_vs_baseline and p_less < alpha)
        significant = (diff > 0 and p_adj < alpha) if rule.require_significance else True
        eq = (max(diff - z_eq * se, -lim), min(diff + z_eq * se, lim))
        not_better = bool(rule.require_significance and eq[1] < rule.margin)
        degenerate = _degenerate(overall.loc[s]) if s != baseline else ""
        mt = matched.get(s)
        md = mt.statistic if mt else float("nan")
        mci = mt.ci if mt and mt.ci else (float("nan"), float("nan"))
        kind, words = gain_kind(diff, md, mci, float(overall.loc[s, "pass_rate"]),
                                float(overall.loc[baseline, "pass_rate"]), matched_label)
        c = Candidate(
            strategy=str(s), objective_value=value, difference=diff, ci=t.ci if t else None,
            pvalue=p, pvalue_adjusted=p_adj, gap=gap, gap_ci=(lo, hi), gap_ok=state == "fair",
            significant=bool(significant), gap_raw=float(ft.loc[s, f"{fair}_raw"]),
            gap_vs_baseline=_f(ft.loc[s, f"{fair}_vs_baseline"]), gap_vs_baseline_pvalue=p_less,
            fair_vs_baseline_ok=fair_rel, degenerate=degenerate, standard_error=se,
            equivalence_ci=eq, not_better=not_better, matched_difference=md, matched_ci=mci,
            gain_kind=kind, gain_words=words, pass_rate=float(overall.loc[s, "pass_rate"]),
            fairness=state)
        excluded = (bool(degenerate) or state == "unfair" or not fair_rel
                    or (t is not None and math.isnan(p)))
        if c.eligible:
            status = "eligible"
        elif excluded:
            status = "excluded"
        elif not_better:
            status = "not_better"
        else:
            status = "open"
        why = exclusion_text(c, rule, alpha)
        needed, codes, text = None, (), ()
        if status == "open" or n_replicates < minimum:
            needed, codes, text = open_reasons(c, rule, alpha, m, n_replicates, minimum)
        cands.append(replace(c, status=status, why=why, replicates_needed=needed,
                             blockers=codes, blocker_text=text))
    eligible = sorted((c for c in cands if c.status == "eligible"),
                      key=lambda c: (-c.objective_value, c.strategy))
    open_ = [c for c in cands if c.status == "open" and c.strategy != baseline]
    best = eligible[0] if eligible else None
    # A candidate with a significant gain whose fairness is undetermined, and a better
    # objective than the best eligible one, could still be the winner: no winner yet.
    better_open = [c for c in open_ if c.fairness == "undetermined" and c.significant
                   and (best is None or c.objective_value > best.objective_value)]
    blockers: tuple[str, ...] = ()
    if n_replicates < minimum:
        kind: VerdictKind = "undecided"
        needed = minimum
        blockers = ("min_replicates",)
    elif best is not None and best.strategy != baseline and not better_open:
        kind = "winner"
        needed = None
    elif open_ and rule.require_significance:
        kind = "undecided"
        deciding = better_open if best is not None else open_
        finite = [c.replicates_needed for c in deciding if c.replicates_needed is not None]
        needed = min(finite) if finite else None
        blockers = tuple(dict.fromkeys(b for c in deciding for b in c.blockers))
    else:
        kind, needed = "not_better", None
    left_out, left_out_text = fairness.left_out(fair), fairness.left_out_text(fair)
    missing = {k: tuple(v) for k, v in (missing_replicates or {}).items() if v}
    headline, details = headline_for(kind, best, cands, baseline=baseline, rule=rule,
                                     alpha=alpha, base_value=base_value, n_replicates=n_replicates,
                                     needed=needed, left_out=left_out_text, minimum=minimum,
                                     m=m, missing=missing,
                                     blocking=tuple(c.strategy for c in better_open)
                                     if best is not None else ())
    reason = reason_for(kind, best, cands, baseline=baseline, rule=rule, alpha=alpha,
                        base_value=base_value, left_out=left_out_text)
    if kind == "undecided":  # not "no strategy beats the baseline": that is not known
        reason = headline.removeprefix("Verdict: ")
        if any(c.fairness == "unknown" for c in cands):
            reason += f" | blueprints: {left_out_text}"
    return Verdict(winner=best.strategy if kind == "winner" and best else None, reason=reason,
                   baseline=baseline, rule=rule, alpha=alpha, candidates=tuple(cands), kind=kind,
                   headline=headline, details=tuple(details), n_replicates=n_replicates,
                   replicates_needed=needed, left_out=left_out, min_replicates=minimum,
                   blockers=blockers, rates_entered=fairness.rates_entered(fair),
                   missing_replicates=missing)
