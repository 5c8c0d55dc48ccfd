"""What a sweep found, as data: the verdict's kind and words, the baseline next to the winner
(or the best candidate), per blueprint; and the parent run's metrics, note and tables.

Pure (no MLflow, no Ray): ``esper_ab.tracking`` writes what this module builds, and
``report`` / ``summary`` render it, so the MLflow UI, ``report.html`` and the console say the
same thing.

- ``verdict_kind`` is ``winner``, ``not_better`` (the evidence says no candidate beats the
  baseline) or ``undecided`` (not enough evidence either way). It is the verdict's own
  ``kind`` when the statistics module gives one, else inferred from the winner.
- Parent-run metrics are named ``<arm>.<metric>`` and ``<arm>.<blueprint>.<rate>`` with arm
  ``baseline`` and ``winner`` (``best`` when there is no winner), so MLflow's compare view
  lines the same quantity up across the arms and across sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from esper_ab.study.analysis import SELECTION_CAVEAT, SweepAnalysis, TrialRecord
from esper_ab.trial import BASELINE_LABEL

__all__ = ["KINDS", "KIND_TITLES", "NOTE_TAG", "arm_prefix", "blueprint_table",
           "blueprint_wide", "child_run_name", "focus_trial", "kind_of", "lines_of",
           "outcome_metrics", "parent_metrics", "parent_note", "parent_params", "parent_tables",
           "parent_tags", "ranked_leaderboard", "stage_result", "verdict_kind", "verdict_lines"]

KINDS = ("winner", "not_better", "undecided")
NOTE_TAG = "mlflow.note.content"      # MLflow shows it as the run's description
KIND_TITLES = {"winner": "Winner", "not_better": "Not better than the baseline",
               "undecided": "Undecided"}
OVERALL = ("pass_rate", "tpr", "fpr", "balanced_accuracy", "mcc", "realized_utility")
GAPS = ("pass_rate_gap", "pass_rate_ratio", "equal_opportunity_gap", "equalized_odds_gap")
RATES = ("pass_rate", "tpr", "fpr")
BLUEPRINT_COLS = ("n", "n_valuable", "n_unmeasured", "mean_value", "pass_rate", "tpr", "fpr",
                  "realized_utility", "spearman_rho", "auc")


# -- the verdict ---------------------------------------------------------------------------
def _verdict(sa: SweepAnalysis) -> Any | None:
    return None if sa.analysis is None else sa.analysis.verdict


def kind_of(v: Any | None) -> str:
    """The kind of a verdict (``None``: no analysis at all, undecided)."""
    kind = getattr(v, "kind", None)
    if kind in KINDS:
        return str(kind)
    if v is None:
        return "undecided"
    return "winner" if getattr(v, "winner", None) else "not_better"


def verdict_kind(sa: SweepAnalysis) -> str:
    """``winner`` | ``not_better`` | ``undecided`` (no analysis at all: undecided)."""
    return kind_of(_verdict(sa))


def _strip(line: str) -> str:
    return line[len("Verdict: "):] if line.startswith("Verdict: ") else line


def verdict_lines(sa: SweepAnalysis) -> list[str]:
    """The headline first (without a leading ``Verdict:``), then the summary lines."""
    v = _verdict(sa)
    return [_strip(getattr(sa, "headline", "") or sa.reason)] if v is None else lines_of(v)


def lines_of(v: Any) -> list[str]:
    lines = list(v.summary_lines()) if hasattr(v, "summary_lines") else []
    head = getattr(v, "headline", "") or (lines[0] if lines else "") or v.reason
    rest = lines[1:] if lines and lines[0] == head else lines
    return [_strip(head), *(s.strip() for s in rest if s.strip())]


# -- the arms: baseline and the winner (or the best candidate) -------------------------------
def focus_trial(sa: SweepAnalysis) -> TrialRecord | None:
    return sa.winner or (sa.selected[0] if sa.selected else None)


def arm_prefix(sa: SweepAnalysis) -> str:
    return "winner" if sa.winner is not None else "best"


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _candidate(analysis: Any, label: str) -> Any | None:
    return next((c for c in analysis.verdict.candidates if c.strategy == label), None)


def outcome_metrics(analysis: Any, arms: Mapping[str, str], *,
                    fairness_metric: str) -> dict[str, float]:
    """``<arm>.<metric>`` (overall rates and objectives, raw gaps, the rule's debiased gap)
    and ``<arm>.<blueprint>.<rate>`` for each ``arm -> strategy label`` of ``analysis``;
    non-finite values are left out (the tables say why)."""
    out: dict[str, float] = {}
    overall, disp, groups = analysis.metrics.overall, analysis.disparities, \
        analysis.metrics.by_group
    fair = getattr(getattr(analysis, "fairness", None), "table", None)
    for arm, label in arms.items():
        if label not in overall.index:
            continue
        row = overall.loc[label]
        out.update({f"{arm}.{m}": float(row[m]) for m in OVERALL if m in row.index})
        if label in disp.index:
            out.update({f"{arm}.{m}": float(disp.loc[label, m]) for m in GAPS
                        if m in disp.columns})
        if fair is not None and label in fair.index and fairness_metric in fair.columns:
            out[f"{arm}.{fairness_metric}_debiased"] = float(fair.loc[label, fairness_metric])
        for bp, g in groups.loc[label].iterrows():
            out.update({f"{arm}.{bp}.{m}": float(g[m]) for m in (*RATES, "realized_utility")
                        if m in g.index})
        c = _candidate(analysis, label)
        if c is not None and arm != "baseline":
            out[f"{arm}.gain_vs_baseline"] = float(c.difference)
            out[f"{arm}.pvalue_adjusted_vs_baseline"] = float(c.pvalue_adjusted)
    return {k: v for k, v in out.items() if _finite(v)}


def _arms(sa: SweepAnalysis) -> dict[str, str]:
    focus = focus_trial(sa)
    return {} if focus is None else {"baseline": BASELINE_LABEL, arm_prefix(sa): focus.label}


def parent_metrics(sa: SweepAnalysis) -> dict[str, float]:
    if sa.analysis is None:
        return {}
    return outcome_metrics(sa.analysis, _arms(sa),
                           fairness_metric=sa.record.spec.selection.fairness_metric)


def _mean_values(decisions: pd.DataFrame | None) -> pd.Series:
    if decisions is None or "value" not in decisions.columns:
        return pd.Series(dtype=float)
    base = decisions[decisions["strategy"] == BASELINE_LABEL]
    return pd.to_numeric(base["value"], errors="coerce").groupby(base["blueprint"]).mean()


def blueprint_table(analysis: Any, arms: Mapping[str, str],
                    decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long form, one row per arm x blueprint: counts, the mean seed value (the same seeds in
    every arm), pass rate, TPR, FPR, realized utility and whether the statistic ranks value."""
    groups = analysis.metrics.by_group
    values = _mean_values(decisions)
    cols = ["arm", "strategy", "blueprint", *BLUEPRINT_COLS]
    parts = []
    for arm, label in arms.items():
        if label not in groups.index.get_level_values("strategy"):
            continue
        part = groups.loc[label].reset_index()
        part = part.assign(arm=arm, strategy=label,
                           mean_value=part["blueprint"].map(values).astype(float))
        parts.append(part[[c for c in cols if c in part.columns]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def _focus_table(sa: SweepAnalysis) -> pd.DataFrame:
    focus = focus_trial(sa)
    if sa.analysis is None or focus is None:
        return pd.DataFrame(columns=["arm", "strategy", "blueprint", *BLUEPRINT_COLS])
    return blueprint_table(sa.analysis, _arms(sa), focus.decisions)


def blueprint_wide(long: pd.DataFrame, arms: list[str]) -> pd.DataFrame:
    """One row per blueprint: the arm-independent columns once, then each quantity per arm
    (two-level columns: quantity, arm)."""
    if long.empty:
        return pd.DataFrame()
    first = long[long["arm"] == arms[0]].set_index("blueprint")
    cols: dict[tuple[str, str], pd.Series] = {("", "blueprint"): pd.Series(first.index,
                                                                          index=first.index)}
    for c, title in (("n", "seeds"), ("n_valuable", "valuable"), ("mean_value", "mean value")):
        if c in first.columns:
            cols[("", title)] = first[c]
    for m, title in (("pass_rate", "pass rate"), ("tpr", "TPR"), ("fpr", "FPR"),
                     ("realized_utility", "realized value"), ("spearman_rho", "Spearman rho")):
        for arm in arms:
            part = long[long["arm"] == arm].set_index("blueprint")
            if m in part.columns:
                cols[(title, arm)] = part[m].reindex(first.index)
    out = pd.DataFrame(cols).reset_index(drop=True)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def ranked_leaderboard(sa: SweepAnalysis) -> pd.DataFrame:
    """The trials, best first by the first objective (NaN last, then trial order)."""
    board = sa.leaderboard
    first = sa.record.spec.objectives[0]
    if board.empty or first.metric not in board.columns:
        return board
    return board.sort_values(first.metric, ascending=first.direction == "min",
                             na_position="last", kind="stable").reset_index(drop=True)


def parent_tables(sa: SweepAnalysis) -> dict[str, pd.DataFrame]:
    """The parent run's MLflow tables (artifact path -> frame)."""
    out = {"tables/trials.json": ranked_leaderboard(sa).drop(columns=["run_id"],
                                                             errors="ignore")}
    if sa.analysis is not None:
        out["tables/per_blueprint.json"] = _focus_table(sa)
        labels = {BASELINE_LABEL: BASELINE_LABEL, **{t.label: t.label for t in sa.selected}}
        out["tables/per_blueprint_selected.json"] = blueprint_table(
            sa.analysis, labels, sa.selected[0].decisions).rename(columns={"arm": "trial"})
        out["tables/disparities.json"] = sa.analysis.disparities.reset_index()
    return out


# -- the parent run's note (MLflow's description) ----------------------------------------------
def _num(v: Any) -> str:
    return f"{v:.4g}" if _finite(v) else "n/a"


def _note(*, title: str, kind: str, lines: list[str], spec: Any, metrics: Mapping[str, float],
          prefix: str, focus: str | None, extra: list[str], tail: str) -> str:
    out = [f"**{title}: {KIND_TITLES[kind]}.** {lines[0]}", ""]
    out += [f"- {s}" for s in lines[1:8]] + extra
    out += ["", f"**Sweep** `{spec.name}`: {spec.description or '(the space has no description)'}"]
    if focus is not None and metrics:
        shown = dict.fromkeys([spec.selection.objective, *(o.metric for o in spec.objectives),
                               spec.selection.fairness_metric, "pass_rate", "tpr", "fpr"])
        out += ["", f"| | {BASELINE_LABEL} (`{spec.baseline}`) | {prefix} (`{focus}`) |",
                "| --- | --- | --- |"]
        fair = spec.selection.fairness_metric       # raw and debiased gaps, each labelled
        shown = {**{m: m for m in shown}, fair: f"{fair} (raw)",
                 f"{fair}_debiased": f"{fair} (debiased: what the rule checks)"}
        out += [f"| {title} | {_num(metrics.get(f'baseline.{m}'))} | "
                f"{_num(metrics.get(f'{prefix}.{m}'))} |" for m, title in shown.items()]
    return "\n".join([*out, "", tail])[:7900]


def parent_note(sa: SweepAnalysis) -> str:
    """Markdown: the verdict (its kind first), the space's description, the headline numbers
    of the baseline and the winner (or best candidate), and where the rest is."""
    spec = sa.record.spec
    focus = focus_trial(sa)
    extra = ["", f"_Note: {SELECTION_CAVEAT}._"] if sa.analysis is not None else []
    return _note(title="Verdict", kind=verdict_kind(sa), lines=verdict_lines(sa), spec=spec,
                 metrics=parent_metrics(sa), prefix=arm_prefix(sa),
                 focus=focus.label if focus else None, extra=extra,
                 tail=f"Fidelity {spec.fidelity}, {len(spec.replicates)} replicates shared by "
                      f"every trial, {len(sa.record.trials)} trial(s). Per blueprint: the table "
                      "`tables/per_blueprint.json`; everything: `report.html`.")


def parent_tags(sa: SweepAnalysis) -> dict[str, str]:
    """The parent run's result tags; the note is its description in MLflow's UI."""
    return {NOTE_TAG: parent_note(sa), "esper_ab.verdict": sa.reason[:4000],
            "esper_ab.verdict_kind": verdict_kind(sa),
            "esper_ab.verdict_headline": verdict_lines(sa)[0][:4000],
            "esper_ab.winner_run_id": sa.winner.run_id if sa.winner else "",
            "esper_ab.winner": sa.winner.label if sa.winner else ""}


def stage_result(analysis: Any, spec: Any, *, stage: str, earlier: list[str]
                 ) -> tuple[dict[str, float], dict[str, pd.DataFrame], dict[str, str]]:
    """A later stage's verdict (``closed_loop``, ``confirm``) for the parent run: metrics
    ``<stage>.baseline.*`` / ``<stage>.winner.*`` (``best`` without a winner; ``confirm``'s
    are the sweep's headline metrics, unprefixed, the search stage's being ``search.*``), the table
    ``tables/<stage>_per_blueprint.json``, and the note with this verdict first, then
    ``earlier`` (e.g. the replay stage's verdict)."""
    v = analysis.verdict
    objective = spec.selection.objective
    overall = analysis.metrics.overall.drop(index=BASELINE_LABEL, errors="ignore")
    focus = v.winner or (str(overall[objective].astype(float).idxmax())
                         if len(overall) and overall[objective].notna().any() else None)
    prefix = "winner" if v.winner else "best"
    arms = {"baseline": BASELINE_LABEL, prefix: focus} if focus else {}
    plain = outcome_metrics(analysis, arms, fairness_metric=spec.selection.fairness_metric)
    kind = kind_of(v)
    table = f"tables/{stage}_per_blueprint.json"
    note = _note(title=f"Verdict ({stage.replace('_', ' ')})", kind=kind, lines=lines_of(v),
                 spec=spec, metrics=plain, prefix=prefix, focus=focus,
                 extra=[""] + [f"**Earlier:** {e}" for e in earlier],
                 tail=f"Per blueprint: the table `{table}`.")
    return ({(k if stage == "confirm" else f"{stage}.{k}"): x for k, x in plain.items()},
            {table: blueprint_table(analysis, arms, getattr(analysis, "decisions", None))},
            {NOTE_TAG: note, "esper_ab.verdict_kind": kind,
             "esper_ab.verdict_headline": lines_of(v)[0][:4000]})


# -- the parent's parameters and the child runs ----------------------------------------------
def parent_params(spec: Any) -> dict[str, Any]:
    """What the parent run logs as parameters: the sweep's shape at a glance."""
    return {"sweep": spec.name, "fidelity": spec.fidelity, "sampler": spec.sampler.kind,
            "num_samples": spec.num_samples, "max_concurrent": spec.max_concurrent,
            "scheduler": spec.scheduler.kind, "replicates": len(spec.replicates),
            "objectives": ",".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
            "strategies": ",".join(s.name for s in spec.strategies),
            "baseline": spec.baseline, "resources.cpu": spec.resources.cpu,
            "resources.gpu": spec.resources.gpu}


def _short(v: Any) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)[:24]
    return f"{x:.3g}" if not float(x).is_integer() or abs(x) >= 1e4 else str(int(x))


def child_run_name(name: str, params: Mapping[str, Any]) -> str:
    """``exponent a=0.25 thr=0.08``: the name the caller gave, then the strategy's own
    parameters, the threshold, and the window / EMA when they are not the defaults."""
    parts = [f"{k[len('param.'):]}={_short(v)}" for k, v in sorted(params.items())
             if k.startswith("param.") and str(v) != "None"]
    extra = {"thr": params.get("threshold"), "ema": params.get("ema_decay"),
             "win": params.get("window")}
    for key, v in extra.items():
        if v is not None and str(v) not in ("None", "") and not (key == "win" and v == "last"):
            parts.append(f"{key}={_short(v)}")
    return " ".join([name, *parts])
