"""One trial of a sweep (pipeline stage 4): sampled gate params -> metrics. No Ray, no MLflow.

A trial builds a ``GateConfig`` from the sampled parameters, gets the gate's per-seed
decisions on the sweep's replicates from an ``Evidence`` source (the replay engine over
recorded traces; every trial sees the same replicates: common random numbers), and turns
them, paired with the baseline gate's decisions on the same seeds, into per-blueprint
fairness metrics with the statistics module.

Multi-fidelity over replicates: ``iter_trial`` evaluates the replicates one at a time and
yields cumulative metrics after each, so a scheduler (ASHA) can stop a weak config after a
few replicates. The last step carries the full paired analysis (p-values against the
baseline). Calibrating strategies are cross-fitted inside the evidence source, so their
first step comes once ``calibration_folds`` replicates are in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from esper_ab.errors import DataError
from esper_ab.gate import PRESETS, GateConfig
from esper_ab.stats import (
    GroupMetrics,
    analyze,
    equal_opportunity_gap,
    equalized_odds_gap,
    pass_rate_gap,
    pass_rate_ratio,
)
from esper_ab.strategies import strategy_class

__all__ = [
    "BASELINE_LABEL", "CANDIDATE_LABEL", "LEGACY_BASELINE_LABEL", "Evidence", "TrialParams", "TrialResult", "TrialStep",
    "as_reference", "batch_trial_metrics", "iter_trial", "metric_key", "reference_name",
    "result_from_step", "run_trial",
    "trial_metrics", "write_trial_artifacts",
]

# The reference gate's rows in every table a study analyses. Not a strategy name: a candidate
# whose strategy is ``baseline`` is labelled ``t001-baseline`` and must never read as the
# reference (tables of earlier versions used "baseline"; ``as_reference`` reads them).
BASELINE_LABEL = "reference"
LEGACY_BASELINE_LABEL = "baseline"
CANDIDATE_LABEL = "candidate"


def reference_name(preset: str) -> str:
    """How text names the reference gate: ``reference (esper_lite_baseline)``."""
    return f"{BASELINE_LABEL} ({preset})"


def as_reference(decisions: pd.DataFrame) -> pd.DataFrame:
    """``decisions`` with the reference's rows under ``BASELINE_LABEL``, also when an earlier
    version wrote them under ``LEGACY_BASELINE_LABEL`` (a resumed or re-read sweep)."""
    legacy = decisions["strategy"] == LEGACY_BASELINE_LABEL
    if not legacy.any() or (decisions["strategy"] == BASELINE_LABEL).any():
        return decisions
    out = decisions.copy()
    out.loc[legacy, "strategy"] = BASELINE_LABEL
    return out
Window = Literal["last", "mean", "median"]


def metric_key(metric: str, blueprint: str | None = None) -> str:
    """The flat metric name logged and reported: ``g2.<metric>[.<blueprint>]``."""
    return f"g2.{metric}" if blueprint is None else f"g2.{metric}.{blueprint}"


@dataclass(frozen=True)
class TrialParams:
    """The sampled configuration of one trial."""

    strategy: str
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    threshold: float = 0.1
    window: Window = "last"
    ema_decay: float | None = None
    min_epochs: int = 10
    clamp: float | None = None
    fail_dead_seeds: bool = True

    def gate_config(self) -> GateConfig:
        return GateConfig(strategy=self.strategy, strategy_params=dict(self.strategy_params),
                          threshold=float(self.threshold), window=self.window,
                          ema_decay=self.ema_decay, min_epochs=int(self.min_epochs),
                          clamp=self.clamp, fail_dead_seeds=self.fail_dead_seeds)

    def label(self) -> str:
        """A short human label, e.g. ``exponent(a=0.31) >= 0.052 [mean, ema 0.9]``."""
        args = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.strategy_params.items()))
        extra = self.window + (f", ema {self.ema_decay:g}" if self.ema_decay is not None else "")
        return f"{self.strategy}({args}) >= {_short(self.threshold)} [{extra}]"

    def as_params(self) -> dict[str, str | float | int | bool | None]:
        """Flat, loggable parameters."""
        out: dict[str, Any] = {"strategy": self.strategy, "threshold": float(self.threshold),
                               "window": self.window, "ema_decay": self.ema_decay,
                               "min_epochs": int(self.min_epochs), "clamp": self.clamp,
                               "fail_dead_seeds": self.fail_dead_seeds}
        out.update({f"param.{k}": v for k, v in sorted(self.strategy_params.items())})
        return out


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class Evidence(Protocol):
    """Where a trial's decisions come from (the replay engine over recorded traces)."""

    @property
    def replicates(self) -> tuple[Any, ...]: ...

    @property
    def min_replicates_for_calibration(self) -> int: ...

    def decisions(self, gate: GateConfig, *, label: str,
                  replicates: Sequence[Any]) -> pd.DataFrame:
        """The decisions table of ``gate`` on ``replicates`` (one row per seed)."""
        ...

    def fit_calibration(self, gate: GateConfig, *, replicates: Sequence[Any]) -> GateConfig:
        """``gate`` with its strategy calibrated on ``replicates`` (for export)."""
        ...


@dataclass(frozen=True)
class TrialStep:
    """Cumulative metrics after ``replicates_evaluated`` replicates. The final step also
    carries the per-blueprint table and the paired analysis against the baseline."""

    replicates_evaluated: int
    metrics: Mapping[str, float]
    decisions: pd.DataFrame
    final: bool
    per_blueprint: pd.DataFrame | None = None
    analysis: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TrialResult:
    """Everything one trial measured. ``decisions`` holds the candidate's and the baseline's
    rows (column ``strategy`` = ``candidate`` / ``baseline``); ``gate_config`` carries the
    calibration fitted on every replicate when the strategy calibrates."""

    params: TrialParams
    gate_config: GateConfig
    decisions: pd.DataFrame
    per_blueprint: pd.DataFrame
    metrics: Mapping[str, float]
    replicates_evaluated: int
    analysis: Mapping[str, Any] | None = None   # the paired analysis' JSON layout

    def objective(self, metric: str) -> float:
        return float(self.metrics.get(metric_key(metric), math.nan))


def _group_metrics(decisions: pd.DataFrame) -> tuple[Any, dict[str, float]]:

    gm = GroupMetrics.from_decisions(decisions, n_boot=0)
    return gm, _metrics_by_label(gm, [CANDIDATE_LABEL])[CANDIDATE_LABEL]


def _metrics_by_label(gm: Any, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """The flat metrics of each strategy ``label`` of one ``GroupMetrics`` (which also holds
    the baseline's rows under ``BASELINE_LABEL``)."""

    group = ("pass_rate", "tpr", "fpr", "n", "n_unmeasured")
    blueprints = list(gm.blueprints)
    per_bp = {m: gm.by_group[m].unstack("blueprint").reindex(columns=blueprints)
              for m in group}
    row_of = {s: i for i, s in enumerate(per_bp["n"].index)}
    per_bp_arr = {m: t.to_numpy(dtype=float) for m, t in per_bp.items()}
    overall_cols = ("pass_rate", "tpr", "fpr", "balanced_accuracy", "mcc", "realized_utility",
                    "n", "n_unmeasured")
    overall = gm.overall[list(overall_cols)].astype(float)
    gaps = {fn.__name__: fn(gm) for fn in (pass_rate_gap, pass_rate_ratio,
                                           equal_opportunity_gap, equalized_odds_gap)}
    base = gm.overall.loc[BASELINE_LABEL]
    base_metrics = {metric_key(m) + ".baseline": float(base[m])
                    for m in ("pass_rate", "balanced_accuracy")}
    out: dict[str, dict[str, float]] = {}
    for label in labels:
        i = row_of[label]
        m_out: dict[str, float] = {}
        for j, bp in enumerate(blueprints):
            for m in group:
                m_out[metric_key(m, str(bp))] = float(per_bp_arr[m][i, j])
        row = overall.loc[label]
        for m in overall_cols:
            m_out[metric_key(m)] = float(row[m])
        for name, series in gaps.items():
            m_out[metric_key(name)] = float(series.loc[label])
        m_out.update(base_metrics)
        out[label] = m_out
    return out


def batch_trial_metrics(decisions: pd.DataFrame, *,
                        labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """The flat metrics of ``trial_metrics(final=False)`` for many candidates at once.

    ``decisions`` holds the baseline's rows (strategy ``baseline``) and each candidate's rows
    under its own label, all on the same seeds; one ``GroupMetrics`` pass serves them all.
    The replay search scores thousands of configs this way (``esper_ab.study.replay_search``).
    """

    gm = GroupMetrics.from_decisions(decisions, n_boot=0, rank_metrics=False)
    return _metrics_by_label(gm, list(labels))


def trial_metrics(decisions: pd.DataFrame, *, final: bool, alpha: float = 0.05,
                  n_boot: int = 200, n_perm: int = 500, seed: int = 0
                  ) -> tuple[dict[str, float], pd.DataFrame, dict[str, Any] | None]:
    """Flat metrics, the per-blueprint table and (``final``) the paired analysis as JSON.

    ``decisions`` holds the candidate's and the baseline's rows on the same seeds.
    """
    gm, metrics = _group_metrics(decisions)
    per_blueprint = gm.by_group.reset_index()
    analysis = None
    if final:

        a = analyze(decisions, baseline=BASELINE_LABEL, alpha=alpha, n_boot=n_boot,
                    n_perm=n_perm, seed=seed)
        per_blueprint = a.metrics.by_group.reset_index()
        for t in a.tests:
            if t.strategy != CANDIDATE_LABEL:
                continue
            name = t.name if t.blueprint is None else f"{t.name}.{t.blueprint}"
            metrics[f"g2.pvalue.{name}"] = _nan(t.pvalue)
            metrics[f"g2.pvalue_adjusted.{name}"] = _nan(t.pvalue_adjusted)
        row = a.disparities.loc[CANDIDATE_LABEL]
        for col in a.disparities.columns:
            if col.endswith(("_ci_low", "_ci_high")):
                metrics[f"g2.{col}"] = _nan(row[col])
        analysis = a.to_dict()
    return metrics, per_blueprint, analysis


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def iter_trial(params: TrialParams, evidence: Evidence, *, baseline: str | GateConfig,
               alpha: float = 0.05, n_boot: int = 200, n_perm: int = 500,
               start: int = 0) -> Iterator[TrialStep]:
    """Evaluate replicate after replicate; yield cumulative metrics after each.

    ``start`` skips the metrics of steps already reported (a retried or resumed trial). A
    replicate's decisions depend only on that replicate, except for calibrating strategies,
    which are cross-fitted again on the replicates seen so far at every step.
    """

    gate = params.gate_config()
    base_gate = PRESETS[baseline] if isinstance(baseline, str) else baseline
    reps = tuple(evidence.replicates)
    calibrating = strategy_class(gate.strategy).needs_calibration or \
        strategy_class(base_gate.strategy).needs_calibration
    first = max(1, evidence.min_replicates_for_calibration if calibrating else 1)
    parts: list[pd.DataFrame] = []
    for k in range(first, len(reps) + 1):
        if calibrating:
            if k <= start:
                continue
            seen = list(reps[:k])
            table = pd.concat([evidence.decisions(gate, label=CANDIDATE_LABEL, replicates=seen),
                               evidence.decisions(base_gate, label=BASELINE_LABEL,
                                                  replicates=seen)], ignore_index=True)
        else:
            one = [reps[k - 1]]
            parts += [evidence.decisions(gate, label=CANDIDATE_LABEL, replicates=one),
                      evidence.decisions(base_gate, label=BASELINE_LABEL, replicates=one)]
            if k <= start:
                continue
            table = pd.concat(parts, ignore_index=True)
        final = k == len(reps)
        metrics, per_blueprint, analysis = trial_metrics(
            table, final=final, alpha=alpha, n_boot=n_boot, n_perm=n_perm)
        yield TrialStep(k, metrics, table, final, per_blueprint if final else None, analysis)


def run_trial(params: TrialParams, evidence: Evidence, *, baseline: str | GateConfig,
              alpha: float = 0.05, n_boot: int = 200, n_perm: int = 500) -> TrialResult:
    """Evaluate every replicate and return the frozen result (the Tune trainable does the
    same, reporting each step)."""
    steps = list(iter_trial(params, evidence, baseline=baseline, alpha=alpha, n_boot=n_boot,
                            n_perm=n_perm))
    last = steps[-1] if steps else None
    if last is None:
        raise DataError("the evidence holds no replicate: record traces for the sweep's "
                        "replicates first")
    return result_from_step(params, last, evidence)


def result_from_step(params: TrialParams, step: TrialStep, evidence: Evidence) -> TrialResult:
    """The frozen ``TrialResult`` of a final step (fits the deployable calibration)."""
    if not step.final or step.per_blueprint is None:
        raise DataError("result_from_step needs the final step of a trial: evaluate every "
                        "replicate first")
    gate = params.gate_config()

    if strategy_class(gate.strategy).needs_calibration:
        gate = evidence.fit_calibration(gate, replicates=list(evidence.replicates))
    return TrialResult(params=params, gate_config=gate, decisions=step.decisions,
                       per_blueprint=step.per_blueprint, metrics=dict(step.metrics),
                       replicates_evaluated=step.replicates_evaluated,
                       analysis=step.analysis)


def write_trial_artifacts(folder: str | Path, result: TrialResult,
                          steps: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """What a finished trial's run holds, written to ``folder`` (the one layout every sweep
    logs under a child run's ``trial/``): ``decisions.csv``, ``per_blueprint.csv``,
    ``gate_config.json`` (with the fitted calibration), ``analysis.json``, ``params.json``
    and, when given, ``steps.json`` (the per-replicate curve: ``[{step, metrics}]``)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    result.decisions.to_csv(out / "decisions.csv", index=False)
    result.per_blueprint.to_csv(out / "per_blueprint.csv", index=False)
    for name, data in (("gate_config.json", result.gate_config.to_dict()),
                       ("analysis.json", result.analysis),
                       ("params.json", result.params.as_params())):
        (out / name).write_text(json.dumps(data, indent=1, default=str, allow_nan=True))
    if steps is not None:
        (out / "steps.json").write_text(json.dumps(list(steps), indent=1, default=str,
                                                   allow_nan=True))
    return out
