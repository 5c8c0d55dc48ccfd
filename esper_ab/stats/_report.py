"""The ``Analysis`` result of :func:`analyze` and its renderings: the JSON layout of issue 4 §8
and the CLI text table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from esper_ab.errors import DataError
from esper_ab.stats._counts import DISPARITY_METRICS
from esper_ab.stats._fairness import FairnessTable
from esper_ab.stats._groups import GroupMetrics
from esper_ab.stats._matched import MatchedComparison
from esper_ab.stats._results import TestResult
from esper_ab.stats._verdict import SelectionRule, Verdict

_OVERALL_CI = ("balanced_accuracy", "mcc", "realized_utility")


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields explicitly
class Analysis:
    """Everything ``analyze`` computed; ``to_dict()`` is the issue §8 JSON layout."""

    baseline: str
    alpha: float
    ci_level: float
    n_boot: int
    n_perm: int
    seed: int
    rule: SelectionRule
    n_replicates: int
    metrics: GroupMetrics
    disparities: pd.DataFrame
    tests: tuple[TestResult, ...]
    matched: MatchedComparison
    verdict: Verdict
    fairness: FairnessTable
    decisions: pd.DataFrame   # the validated table
    matched_label: str = "the baseline's pass rate"

    @property
    def strategies(self) -> tuple[str, ...]:
        return self.metrics.strategies

    @property
    def blueprints(self) -> tuple[str, ...]:
        return self.metrics.blueprints

    def find_test(self, name: str, *, strategy: str | None = None,
                  blueprint: str | None = None) -> TestResult:
        """The test with this name, strategy and blueprint (DataError naming what exists)."""
        for t in self.tests:
            if t.name == name and t.strategy == strategy and t.blueprint == blueprint:
                return t
        names = sorted({t.name for t in self.tests})
        raise DataError(f"no test {name!r} for strategy={strategy!r}, blueprint={blueprint!r}: "
                        f"use one of the test names {names} with a strategy it ran for")

    def tests_frame(self) -> pd.DataFrame:
        """The tests as a table (one row per test)."""
        return pd.DataFrame([t.to_dict() for t in self.tests])

    def to_dict(self) -> dict[str, object]:
        return analysis_to_dict(self)

    def format_table(self) -> str:
        return format_analysis(self)



def _num(v: object) -> object:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(float(v)) else None
    return v


def _nested(frame: pd.DataFrame) -> dict[str, dict[str, dict[str, object]]]:
    out: dict[str, dict[str, dict[str, object]]] = {}
    for (s, b), row in frame.iterrows():
        out.setdefault(str(s), {})[str(b)] = {k: _num(v) for k, v in row.items()}
    return out


def _disparities(table: pd.DataFrame, names: tuple[str, ...]) -> dict[str, dict[str, object]]:
    return {
        str(s): {m: {"estimate": _num(row[m]), "ci_low": _num(row[f"{m}_ci_low"]),
                     "ci_high": _num(row[f"{m}_ci_high"])} for m in names}
        for s, row in table.iterrows()
    }


def analysis_to_dict(a: Analysis) -> dict[str, object]:
    overall = {}
    for s, row in a.metrics.overall.iterrows():
        entry = {k: _num(v) for k, v in row.items()}
        for m in _OVERALL_CI:
            entry[f"{m}_ci"] = [_num(a.disparities.loc[s, f"{m}_ci_low"]),
                                _num(a.disparities.loc[s, f"{m}_ci_high"])]
        overall[str(s)] = entry
    m = a.matched
    matched_strategies = {}
    for s in a.strategies:
        entry = {"threshold": _num(m.thresholds[s]),
                 "realized_pass_rate": _num(m.realized_pass_rate[s])}
        for k in ("balanced_accuracy", "mcc", "realized_utility", *DISPARITY_METRICS):
            entry[k] = _num(m.disparities.loc[s, k])
        matched_strategies[s] = entry
    rate_cols = ["n_passed", "pass_rate", "tpr", "fpr", "precision"]
    return {
        "verdict": a.verdict.to_dict(),  # first, so that the file starts with the answer
        "baseline": a.baseline,
        "alpha": a.alpha,
        "ci_level": a.ci_level,
        "strategies": list(a.strategies),
        "blueprints": list(a.blueprints),
        "n_replicates": a.n_replicates,
        "settings": {"n_boot": a.n_boot, "n_perm": a.n_perm, "seed": a.seed,
                     "rule": asdict(a.rule)},
        "per_blueprint": _nested(a.metrics.by_group),
        "overall": overall,
        "disparities": _disparities(a.disparities, DISPARITY_METRICS),
        "tests": [t.to_dict() for t in a.tests],
        "matched": {
            "target_pass_rate": _num(m.target_pass_rate),
            "strategies": matched_strategies,
            "disparities": _disparities(m.disparities, DISPARITY_METRICS),
            "per_blueprint": _nested(m.metrics.by_group[rate_cols]),
            "gains_vs_baseline": [t.to_dict() for t in m.tests],
        },
        "fairness": a.fairness.to_dict(),
    }


def _f(x: object, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float | np.floating) and not math.isfinite(float(x))):
        return "-"
    text = format(x, spec)
    # a value that rounds to zero prints without a sign ("0.000", never "-0.000")
    if "e" not in text and text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text


def _ci(est: float, lo: float, hi: float) -> str:
    return f"{_f(est)} [{_f(lo)}, {_f(hi)}]"


def _p(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.2e}" if x < 1e-3 else f"{x:.4f}"


def format_analysis(a: Analysis) -> str:
    """Human-readable report: per-blueprint table, overall, disparities, matched, tests, verdict."""
    lvl = f"{a.ci_level:.0%}"
    lines = [
        *a.verdict.summary_lines(),
        "",
        f"esper-ab analyze: {len(a.strategies)} strategies x {len(a.blueprints)} blueprints x "
        f"{a.n_replicates} replicates; baseline {a.baseline!r}, alpha {a.alpha:g}, "
        f"{lvl} CIs by cluster bootstrap over replicates ({a.n_boot} resamples)",
        "",
        "Per blueprint",
    ]
    g = a.metrics.by_group
    per = pd.DataFrame({
        "n": g["n"], "unmeasured": g["n_unmeasured"],
        "pass": g["pass_rate"].map(_f), "TPR": g["tpr"].map(_f), "FPR": g["fpr"].map(_f),
        "precision": g["precision"].map(_f), "median_epoch": g["median_pass_epoch"].map(
            lambda v: _f(v, ".1f")),
        f"AUC [{lvl} CI]": [_ci(*r) for r in g[["auc", "auc_ci_low", "auc_ci_high"]].to_numpy()],
        "spearman_rho": g["spearman_rho"].map(_f),
    })
    lines += [_frame(per, counts=("n", "unmeasured")), "", "Overall"]
    d = a.disparities
    ov = a.metrics.overall
    overall = pd.DataFrame({
        "n": ov["n"], "pass": ov["pass_rate"].map(_f), "TPR": ov["tpr"].map(_f),
        "FPR": ov["fpr"].map(_f),
        "balanced_accuracy": [_ci(d.loc[s, "balanced_accuracy"], d.loc[s, "balanced_accuracy_ci_low"],
                                  d.loc[s, "balanced_accuracy_ci_high"]) for s in ov.index],
        "MCC": ov["mcc"].map(_f), "realized_utility": ov["realized_utility"].map(_f),
    }, index=ov.index)
    lines += [_frame(overall, counts=("n",)), "", f"Disparities across blueprints ({lvl} CI)"]
    disp = pd.DataFrame({m: [_ci(d.loc[s, m], d.loc[s, f"{m}_ci_low"], d.loc[s, f"{m}_ci_high"])
                             for s in d.index] for m in DISPARITY_METRICS}, index=d.index)
    lines += [_frame(disp), "", *_fairness_lines(a), ""]
    m = a.matched
    md = m.disparities
    lines.append(f"Matched comparison: every strategy re-thresholded to overall pass rate "
                 f"{m.target_pass_rate:.3f}")
    matched = pd.DataFrame({
        "threshold": m.thresholds.map(lambda v: _f(v, ".4g")),
        "pass": m.realized_pass_rate.map(_f),
        "balanced_accuracy": md["balanced_accuracy"].map(_f),
        "pass_rate_gap": md["pass_rate_gap"].map(_f),
        "equalized_odds_gap": md["equalized_odds_gap"].map(_f),
    })
    lines += [_frame(matched), "", "Tests (two-sided; p raw and adjusted: Holm across "
              "strategies, BH across blueprint-level tests)"]
    rows = [t for t in a.tests if t.blueprint is None]
    tt = pd.DataFrame({
        "test": [t.name for t in rows],
        "strategy": [t.strategy or "(all)" for t in rows],
        "statistic": [_f(t.statistic, ".4g") for t in rows],
        "effect": [_f(t.effect_size, "+.3f") for t in rows],
        "CI": [f"[{_f(t.ci[0])}, {_f(t.ci[1])}]" if t.ci else "" for t in rows],
        "p": [_p(t.pvalue) for t in rows],
        "p_adj": [_p(t.pvalue_adjusted) for t in rows],
    })
    lines.append(_frame(tt) if len(tt) else "(none)")
    bp = [t for t in a.tests if t.blueprint is not None]
    sig = [t for t in bp if t.pvalue_adjusted is not None and t.pvalue_adjusted < a.alpha]
    lines.append(f"Blueprint-level tests: {len(bp)}, {len(sig)} with BH-adjusted p < {a.alpha:g}"
                 + (":" if sig else " (all in the JSON output)"))
    for t in sig:
        lines.append(f"  {t.name} {t.strategy}/{t.blueprint}: statistic {_f(t.statistic, '.4g')}, "
                     f"effect {_f(t.effect_size, '+.3f')}, p {_p(t.pvalue)}, p_adj "
                     f"{_p(t.pvalue_adjusted)}")
    v = a.verdict
    lines += ["", f"Verdict ({v.kind}): {v.winner or 'none'}", f"  {v.reason}"]
    return "\n".join(lines)


def _fairness_lines(a: Analysis) -> list[str]:
    f, rule = a.fairness, a.rule
    ft = f.table
    lines = [f"Fairness criterion: gaps debiased (bias of max - min removed at empirical-Bayes "
             f"rates), raw beside; TPR on blueprints with >= {f.min_valuable} valuable seeds, "
             f"FPR on those with >= {f.min_non_valuable} non-valuable seeds "
             f"({f.left_out_text()}); 'vs baseline': debiased difference, sign-flip test of "
             "the raw gaps over replicates, one-sided p for 'less fair'"]
    cols = {}
    for m in ("equalized_odds_gap", "equal_opportunity_gap", "pass_rate_gap"):
        cols[f"{m} debiased [{a.ci_level:.0%} CI]"] = [
            _ci(ft.loc[s, m], ft.loc[s, f"{m}_ci_low"], ft.loc[s, f"{m}_ci_high"]) for s in ft.index]
        cols[f"{m}_raw"] = ft[f"{m}_raw"].map(_f)
    m = rule.fairness_metric
    cols[f"{m} debiased vs baseline"] = ft[f"{m}_vs_baseline"].map(lambda v: _f(v, "+.3f"))
    cols["p (less fair)"] = ft[f"{m}_vs_baseline_p"].map(_p)
    # one row per quantity, one column per strategy: the long labels stay whole on one line
    lines.append(_frame(pd.DataFrame(cols, index=ft.index).T.rename_axis("gap")))
    return lines


def _frame(frame: pd.DataFrame, *, counts: tuple[str, ...] = ()) -> str:
    """A table for people (``esper_ab.console``): aligned, counts as integers, labels whole;
    the index (strategy, blueprint) first, named."""
    from esper_ab.console import render_frame

    if frame.index.nlevels == 1 and frame.index.name is None and \
            not isinstance(frame.index, pd.RangeIndex):
        frame = frame.rename_axis("strategy")
    return render_frame(frame, counts=counts)
