"""After a sweep: the records of its trials, and one paired analysis across the best of them.

Pure (no Ray, no MLflow): ``esper_ab.tracking`` reads a ``SweepRecord`` back from MLflow and
``analyze_sweep`` selects the ``top_k`` trials (the Pareto front first when there are several
objectives), puts their decisions side by side with the baseline gate's decisions on the very
same seeds (common random numbers), and runs the statistics module's ``analyze``: paired
tests against the baseline, corrected for multiplicity, and the verdict under the sweep's
selection rule.

Caveat stated in every report: the trials are chosen on the same replicates that the
final analysis tests, so the p-values are optimistic (selection is not independent of the
test). A confirmation sweep on fresh replicates removes the bias.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.gate import GateConfig
from esper_ab.study.spec import SweepSpec
from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL, metric_key

__all__ = ["SweepAnalysis", "SweepRecord", "TrialRecord", "analyze_sweep", "pareto_front"]

SELECTION_CAVEAT = ("trials are selected and tested on the same replicates, so p-values are "
                    "optimistic; confirm the winner on fresh replicates")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as tracked: its child run, parameters, last metrics and decisions."""

    trial_id: str
    run_id: str
    number: int
    status: str                      # FINISHED / FAILED
    stopped_early: bool
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    gate_config: GateConfig | None = None
    decisions: pd.DataFrame | None = None
    reason: str = ""

    @property
    def label(self) -> str:
        return f"t{self.number:03d}-{self.params.get('strategy', '?')}"

    def objective(self, metric: str) -> float:
        return float(self.metrics.get(metric_key(metric), math.nan))

    @property
    def complete(self) -> bool:
        return self.status == "FINISHED" and not self.stopped_early \
            and self.decisions is not None


# the analysis of a sweep's trials from the files written beside each other (sweep/ in
# MLflow, a 'report --out' folder): the same rule and resampling, so the same verdict
REPRODUCE = ("reproduce this analysis: esper-ab analyze decisions.csv --settings-from "
             "analysis.json")


def analysis_text(analysis: Any) -> str:
    """``analysis.txt``: the analysis as text, ending with the command that reproduces it
    from the ``decisions.csv`` and ``analysis.json`` written beside it."""
    return f"{analysis.format_table()}\n\n{REPRODUCE}\n"


@dataclass(frozen=True)
class SweepRecord:
    """A sweep as tracked: its parent run, resolved spec and trials."""

    experiment: str
    sweep_run_id: str
    spec: SweepSpec
    trials: tuple[TrialRecord, ...]
    versions: Mapping[str, str]
    git_commit: str
    # the held-out confirmation, when the sweep ran one (``confirm/verdict.txt`` and its
    # kind): the sweep's answer; the analysis of ``trials`` is the search stage's
    confirmed: str = ""
    confirmed_kind: str = ""


@dataclass(frozen=True)
class SweepAnalysis:
    """The cross-trial analysis: leaderboard, Pareto front, selected trials, verdict."""

    record: SweepRecord
    leaderboard: pd.DataFrame
    pareto: tuple[str, ...]            # trial ids on the front of the objectives
    selected: tuple[TrialRecord, ...]
    analysis: Any | None               # esper_ab.stats.Analysis
    winner: TrialRecord | None
    reason: str

    @functools.cached_property
    def decisions(self) -> pd.DataFrame | None:
        """The combined decisions table the analysis ran on (combined once: the summary
        writes it and the tracker logs it)."""
        return None if not self.selected else _combined(self.selected)

    def analysis_text(self) -> str:
        """``analysis_text`` of the analysis ("" when nothing was compared)."""
        return analysis_text(self.analysis) if self.analysis is not None else ""

    @property
    def kind(self) -> str:
        """``winner``, ``not_better`` or ``undecided`` (no complete trial: nothing compared)."""
        return self.analysis.verdict.kind if self.analysis is not None else "undecided"

    @property
    def headline(self) -> str:
        """The one line any rendering puts first (``Verdict: <kind>...``)."""
        if self.analysis is not None:
            return self.analysis.verdict.headline
        return f"Verdict: undecided: {self.reason.removeprefix('no winner: ')}"

    def summary_lines(self) -> list[str]:
        """The headline and a few lines under it, then the selection caveat."""
        if self.analysis is None:
            return [self.headline]
        return [*self.analysis.verdict.summary_lines(), f"  note: {SELECTION_CAVEAT}"]


def _signed(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Objectives turned so that larger is better."""
    sign = np.array([1.0 if d == "max" else -1.0 for d in directions])
    return values * sign


def pareto_front(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Mask of the non-dominated rows of ``values`` [n, m] (rows with NaN are dominated)."""
    v = _signed(np.asarray(values, dtype=float), directions)
    ok = np.isfinite(v).all(axis=1)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = v[ok]
        dominated = (others >= v[i]).all(axis=1) & (others > v[i]).any(axis=1)
        front[i] = not dominated.any()
    return front


def _leaderboard(spec: SweepSpec, trials: tuple[TrialRecord, ...]) -> pd.DataFrame:
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.label, "trial_id": t.trial_id, "run_id": t.run_id,
                               "status": t.status, "stopped_early": t.stopped_early,
                               "replicates": t.metrics.get("replicates_evaluated", math.nan)}
        for o in spec.objectives:
            row[o.metric] = t.objective(o.metric)
        row["params"] = ", ".join(f"{k}={v}" for k, v in sorted(t.params.items())
                                  if k not in ("strategy",) and v not in ("None",))
        rows.append(row)
    cols = ["trial", "trial_id", "run_id", "status", "stopped_early", "replicates",
            *[o.metric for o in spec.objectives], "params"]
    return pd.DataFrame(rows, columns=cols)


def _combined(selected: tuple[TrialRecord, ...]) -> pd.DataFrame:
    first = selected[0].decisions
    assert first is not None
    parts = [first[first["strategy"] == BASELINE_LABEL]]
    for t in selected:
        d = t.decisions
        assert d is not None
        cand = d[d["strategy"] == CANDIDATE_LABEL].copy()
        cand["strategy"] = t.label
        parts.append(cand)
    return pd.concat(parts, ignore_index=True)


def _rank(spec: SweepSpec, trials: list[TrialRecord]) -> tuple[list[TrialRecord], np.ndarray]:
    dirs = [o.direction for o in spec.objectives]
    vals = np.array([[t.objective(o.metric) for o in spec.objectives] for t in trials],
                    dtype=float).reshape(len(trials), len(dirs))
    front = pareto_front(vals, dirs) if len(trials) else np.zeros(0, bool)
    primary = _signed(vals, dirs)[:, 0] if len(trials) else np.zeros(0)
    primary = np.where(np.isfinite(primary), primary, -np.inf)
    order = sorted(range(len(trials)),
                   key=lambda i: (not front[i] if spec.multi_objective else False,
                                  -primary[i], trials[i].number))
    return [trials[i] for i in order], front


def analyze_sweep(record: SweepRecord, *, n_boot: int = 1000, n_perm: int = 2000,
                  seed: int = 0) -> SweepAnalysis:
    """Select the best trials and test them, paired, against the baseline."""
    spec = record.spec
    board = _leaderboard(spec, record.trials)
    complete = [t for t in record.trials if t.complete]
    ranked, front = _rank(spec, complete)
    pareto = tuple(t.trial_id for t, f in zip(complete, front, strict=True) if f)
    primary = spec.objectives[0].metric
    selected = tuple(t for t in ranked if math.isfinite(t.objective(primary)))[
        :spec.selection.top_k]
    if not selected:
        why = ("no trial completed every replicate" if not complete else
               f"no completed trial has a finite {primary}")
        return SweepAnalysis(record, board, pareto, (), None, None,
                             f"no winner: {why} ({len(record.trials)} trial(s) tracked)")
    from esper_ab.stats import analyze

    table = _combined(selected)
    analysis = analyze(table, baseline=BASELINE_LABEL, alpha=spec.selection.alpha,
                       rule=spec.selection.rule(), n_boot=n_boot, n_perm=n_perm, seed=seed)
    verdict = analysis.verdict
    winner = next((t for t in selected if t.label == verdict.winner), None)
    head = verdict.headline.removeprefix("Verdict: ")
    reason = (f"{head} | {verdict.reason}" if not verdict.reason.startswith(head) else
              verdict.reason) + f"; note: {SELECTION_CAVEAT}"
    return SweepAnalysis(record, board, pareto, selected, analysis, winner, reason)
