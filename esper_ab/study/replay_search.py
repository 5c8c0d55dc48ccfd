"""Replay-fidelity search: an Optuna study over replay, in process, without Ray.

During TRAINING the host is unaffected by its seeds (DOMAIN.md §1, §7), so the G2 decisions
of any gate config are a pure function of the recorded traces (``esper_ab.replay.engine``). A config
then costs milliseconds, and the search runs thousands of them on one core: the same
conditional space (``esper_ab.study.space``), the same sampler kinds and the same persistent
journal storage (``esper_ab.study.studies``) as the Ray Tune sweep, and the same trial metrics
(``esper_ab.trial``: the candidate's decisions paired with the baseline gate's on the same
seeds, scored by ``esper_ab.stats``).

Configs are evaluated in batches: ``batch_size`` trials are asked from the study, each is
replayed over every replicate, all candidates' decisions go into one table with the
baseline's, and ``trial.batch_trial_metrics`` scores them in one pass; then every trial is
told its objective(s), and the batch's journal writes land with one ``fsync``. TPE samples
each batch from the same history (it sees the earlier batches, not its own); a TPE ask
costs time linear in the study's size, so TPE slows as the study grows (measured in
``benchmarks/replay_search_speed.py``); random, grid and NSGA-II do not.

``search_replay`` is the study alone (returns the trial table); ``esper_ab.replay_tracking``
logs it to MLflow like any other sweep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esper_ab.errors import EsperABError
from esper_ab.gate import PRESETS
from esper_ab.stats import degenerate_reason
from esper_ab.study.space import define_by_run, grid_points, params_from_flat
from esper_ab.study.spec import SweepSpec
from esper_ab.trial import BASELINE_LABEL, Evidence, TrialParams, batch_trial_metrics, metric_key

__all__ = ["ReplaySearch", "rank_trials", "replay_study_name", "search_replay"]


def replay_study_name(spec: SweepSpec, sweep_run: str | None = None) -> str:
    """The Optuna study of a sweep's replay search (never shared with its Ray sweep); with
    ``sweep_run``, that run's own study (a new sweep never warm-starts from an earlier one)."""
    return f"{spec.name}-replay" + (f"-{sweep_run}" if sweep_run else "")


@dataclass(frozen=True, eq=False)
class ReplaySearch:
    """The configs one replay search evaluated.

    ``trials``: one row per config of this search -- ``number`` (Optuna trial), ``state``
    (COMPLETE / FAIL), ``label``, the flat params (``strategy``, ``threshold``, ``window``,
    ``ema_decay``, ``min_epochs``, ``param.*``), every trial metric (``g2.*``) and ``reason``
    (why a config failed or cannot be ranked). ``params`` maps trial number to its params.
    """

    spec: SweepSpec
    study_name: str
    journal: Path
    trials: pd.DataFrame
    params: dict[int, TrialParams] = field(repr=False)
    n_replicates: int
    wall_s: float        # the search loop: ask, replay, score, tell, journal writes
    cpu_s: float         # process CPU time of the same loop

    @property
    def n_configs(self) -> int:
        return len(self.trials)

    @property
    def configs_per_s(self) -> float:
        return self.n_configs / self.wall_s if self.wall_s > 0 else math.nan


def _points(spec: SweepSpec) -> list[dict[str, Any]] | None:
    return grid_points(spec) if spec.sampler.kind == "grid" else None


def _objective_values(spec: SweepSpec, metrics: dict[str, float]) -> list[float]:
    return [float(metrics.get(metric_key(o.metric), math.nan)) for o in spec.objectives]


def search_replay(spec: SweepSpec, evidence: Evidence, *, folder: str | Path,
                  num_samples: int | None = None, batch_size: int = 64,
                  progress: Callable[[str, int, int], None] | None = None,
                  sweep_run: str | None = None) -> ReplaySearch:
    """Run the replay search of ``spec`` over ``evidence`` (every replicate of it);
    ``progress("search", done, total)`` after each batch of configs.

    The study ``<name>-replay`` (``<name>-replay-<sweep_run>`` for a tracked sweep run: each
    its own) lives in ``folder/optuna-replay.journal``; without ``sweep_run`` later
    searches of the same sweep append to it. ``num_samples`` overrides the spec's (the grid
    sampler evaluates every grid point).
    """
    import optuna
    from optuna.trial import TrialState

    from esper_ab.errors import ConfigError
    from esper_ab.study.studies import (
        REPLAY_JOURNAL,
        BatchedJournalBackend,
        SweepFolderLock,
        optuna_directions,
        optuna_sampler,
        optuna_storage,
    )

    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is invalid: use 1 or more")
    folder = Path(folder)
    points = _points(spec)
    n_total = len(points) if points else int(num_samples or spec.num_samples)
    space = define_by_run(spec)
    reps = tuple(evidence.replicates)
    name = replay_study_name(spec, sweep_run)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # no INFO line per trial
    try:
        with SweepFolderLock(folder, "replay-search",
                             what=f"a replay search of sweep {spec.name!r}"):
            backend = BatchedJournalBackend(folder / REPLAY_JOURNAL)
            storage = optuna_storage(spec, folder, study_name=name, journal=REPLAY_JOURNAL,
                                     backend=backend)
            study = optuna.create_study(study_name=name, storage=storage,
                                        sampler=optuna_sampler(spec),
                                        directions=optuna_directions(spec), load_if_exists=True)
            for point in points or ():
                study.enqueue_trial(point)
            import esper_ab.stats  # noqa: F401  (a one-off import, kept out of the clock)

            t0, c0 = time.perf_counter(), time.process_time()
            base = evidence.decisions(PRESETS[spec.baseline], label=BASELINE_LABEL,
                                      replicates=reps)
            rows: list[dict[str, Any]] = []
            params: dict[int, TrialParams] = {}
            if progress is not None:
                progress("search", 0, n_total)
            while len(rows) < n_total:
                batch = [study.ask() for _ in range(min(batch_size, n_total - len(rows)))]
                rows += _evaluate_batch(spec, evidence, study, batch, base, reps, params,
                                        space, TrialState)
                backend.flush()
                if progress is not None:
                    progress("search", len(rows), n_total)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        optuna.logging.set_verbosity(verbosity)
    return ReplaySearch(spec=spec, study_name=name, journal=folder / REPLAY_JOURNAL,
                        trials=pd.DataFrame(rows), params=params, n_replicates=len(reps),
                        wall_s=wall, cpu_s=cpu)


def _evaluate_batch(spec: SweepSpec, evidence: Evidence, study: Any, batch: Sequence[Any],
                    base: pd.DataFrame, reps: tuple[Any, ...], params: dict[int, TrialParams],
                    space: Any, TrialState: Any) -> list[dict[str, Any]]:
    """Replay and score one batch of asked trials, tell the study, return their rows."""
    parts, labels, failed = [base], [], {}
    for t in batch:
        try:
            fixed = space(t)   # suggests first: t.params holds the sampled values after it
            p = params_from_flat({**t.params, **fixed}, spec)
            params[t.number] = p
            parts.append(evidence.decisions(p.gate_config(), label=f"c{t.number}",
                                            replicates=reps))
            labels.append(f"c{t.number}")
        except EsperABError as exc:   # e.g. a parameter combination the strategy refuses
            failed[t.number] = f"invalid config: {' '.join(str(exc).split())[:300]}"
    scored = batch_trial_metrics(pd.concat(parts, ignore_index=True), labels=labels) \
        if labels else {}
    rows = []
    for t in batch:
        metrics = scored.get(f"c{t.number}", {})
        values = _objective_values(spec, metrics)
        reason = failed.get(t.number, "")
        if not reason and not all(math.isfinite(v) for v in values):
            reason = (f"objective(s) {[o.metric for o in spec.objectives]} = {values}: "
                      "undefined for this config (kept, not ranked)")
        if reason:
            study.tell(t, state=TrialState.FAIL)
        else:
            study.tell(t, values if spec.multi_objective else values[0])
        p = params.get(t.number)
        row: dict[str, Any] = {"number": t.number, "state": "FAIL" if reason else "COMPLETE",
                               "label": p.label() if p else ""}
        row.update(p.as_params() if p else {})
        row.update(metrics)
        row["reason"] = reason
        rows.append(row)
    return rows


def rank_trials(spec: SweepSpec, trials: pd.DataFrame) -> pd.DataFrame:
    """Complete configs, best first: by the first objective (the Pareto front of all
    objectives first, when there are several), ties by trial number. A degenerate gate (it
    admits no seed, every seed, or no valuable seed on the searched replicates) ranks after
    every other config: the verdict can never pick it, so it never takes a finalist's place."""
    from esper_ab.study.analysis import pareto_front

    cols = [metric_key(o.metric) for o in spec.objectives]
    if trials.empty:
        return trials
    ok = trials[(trials["state"] == "COMPLETE")].copy()
    if ok.empty:
        return ok
    dirs = [o.direction for o in spec.objectives]
    values = ok[cols].to_numpy(dtype=float)
    sign = np.array([1.0 if d == "max" else -1.0 for d in dirs])
    ok["_usable"] = _usable(ok)
    ok["_front"] = pareto_front(values, dirs) if spec.multi_objective else True
    ok["_primary"] = values[:, 0] * sign[0]
    ok = ok.sort_values(["_usable", "_front", "_primary", "number"],
                        ascending=[False, False, False, True])
    return ok.drop(columns=["_usable", "_front", "_primary"]).reset_index(drop=True)


def _usable(trials: pd.DataFrame) -> np.ndarray:
    """Not degenerate, as ``stats`` judges a candidate (``degenerate_reason``); a table
    without the pass-rate and TPR columns counts as usable."""
    if not {"g2.pass_rate", "g2.tpr"} <= set(trials.columns):
        return np.ones(len(trials), dtype=bool)
    n = trials["g2.n"] if "g2.n" in trials.columns else pd.Series(1, index=trials.index)
    return np.array([not degenerate_reason(int(k) if np.isfinite(k) else 0, float(r), float(t))
                     for k, r, t in
                     zip(n, trials["g2.pass_rate"], trials["g2.tpr"], strict=True)], dtype=bool)
