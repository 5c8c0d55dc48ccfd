"""Ray Tune sweeps at replay fidelity that amortize: one Tune trial scores a batch of configs.

A replay config costs milliseconds; a Tune trial costs a scheduling round trip, a report and
a result, a few hundred milliseconds. So at replay fidelity a Tune trial is a *batch*: the
driver asks Optuna for ``batch_size`` configs (``BatchPlanner.suggest``: Optuna still holds
one trial per config, tagged with its Tune trial and sweep run), the worker replays every
config over every replicate and scores them all in one pass (``trainables.score_configs``: the in-process
search's batched scoring, ``trial.batch_trial_metrics``), and the driver appends the batch's
rows to ``batches.jsonl`` in the sweep folder (fsync) *before* it tells Optuna each config's
objective(s): a config final in Optuna has its row on disk. With a ``Pipeline``
(``esper_ab.study.studies``; the Tune driver passes ``slots``) the i-th batch is asked
from the batches up to i - ``max_concurrent`` told, as soon as they are: a seeded sampler
draws the same configs whatever order the batches end in, and a slot asks its next batch
when its own has ended, while the others run. (A ``Lockstep``, rounds of ``max_concurrent``
batches as the per-config path asks configs, gives the same independence with a barrier
per round.) Ray Tune stays the scheduler: the
batches run wherever the cluster has room, with Tune's retries.

MLflow gets the compact layout of the in-process replay sweep: the parent run holds the table
of every config (``replay/trials.parquet``) and the finalists are re-run as full trials, one
child run each (``esper_ab.study.finalists``); at thousands of configs a child per
config would cost more MLflow writes than the search itself.

This module is the driver's side (Ray core only: the cluster's CPUs); the worker's side is
``esper_ab.tune_driver.trainables.score_configs``, and ``esper_ab.tune_driver.tune_runner``
wraps both in a Tune ``Searcher`` and trainable.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from esper_ab.errors import EsperABError
from esper_ab.study.finalists import log_finalists, log_search
from esper_ab.study.replay_search import ReplaySearch
from esper_ab.study.resume import SUPERSEDED, SWEEP_RUN, TUNE_TRIAL_ID
from esper_ab.study.space import define_by_run, grid_points, params_from_flat
from esper_ab.study.spec import SweepSpec
from esper_ab.study.studies import (
    BatchedJournalBackend,
    Lockstep,
    Pipeline,
    optuna_directions,
    optuna_sampler,
    optuna_storage,
    sweep_study_name,
)
from esper_ab.trial import Evidence, TrialParams, metric_key
from esper_ab.tune_driver._round_tpe import round_cached

__all__ = ["BATCH_ROWS", "MAX_BATCH", "MIN_BATCHED", "BatchPlanner", "batch_size",
           "batch_size_for", "batch_slots", "compute_total", "log_batched_search", "read_rows", "trials_table"]

BATCH_ROWS = "batches.jsonl"
MAX_BATCH = 64          # as the in-process search: TPE asks a batch from one history
MIN_BATCHED = 32        # smaller sweeps keep a Tune trial (and a child run) per config


def batch_size_for(spec: SweepSpec, n_configs: int, slots: int,
                   requested: int | None = None) -> int:
    """Configs per Tune trial. ``requested`` wins; else 1 off replay fidelity (a closed-loop
    config is minutes: a trial each) and for small sweeps (under ``MIN_BATCHED`` configs:
    a child run per config), and otherwise enough configs that each of the ``slots``
    concurrent trials runs about two batches (the sampler learns between them), at most
    ``MAX_BATCH``."""
    if requested is not None:
        return max(1, int(requested))
    if spec.fidelity != "replay" or n_configs < MIN_BATCHED:
        return 1
    return max(1, min(MAX_BATCH, math.ceil(n_configs / (2 * max(1, slots)))))


def _objective_values(spec: SweepSpec, metrics: dict[str, float]) -> list[float]:
    return [float(metrics.get(metric_key(o.metric), math.nan)) for o in spec.objectives]


def _row_reason(spec: SweepSpec, row: dict[str, Any]) -> str:
    values = _objective_values(spec, row["metrics"])
    if row["reason"] or all(math.isfinite(v) for v in values):
        return row["reason"]
    return (f"objective(s) {[o.metric for o in spec.objectives]} = {values}: undefined for "
            "this config (kept, not ranked)")


class BatchPlanner:
    """The driver's side: asks Optuna for batches and tells it how each config did (a fresh
    grid sweep, ``grid``, queues every grid point first).

    Journal writes are buffered and land with one fsync per batch asked and per batch told
    (``BatchedJournalBackend``: the planner is the study's only writer while Tune runs).
    ``slots``: ask in a ``Pipeline`` that deep (unless a ``lockstep`` is given)."""

    def __init__(self, spec: SweepSpec, folder: Path, *, sweep_run: str, seed: int,
                 batch_size: int, n_configs: int, grid: bool = True,
                 on_told: Callable[[int], None] | None = None,
                 lockstep: Lockstep | Pipeline | None = None, slots: int | None = None) -> None:
        import optuna

        self.spec, self.folder, self.sweep_run = spec, Path(folder), sweep_run
        self.batch_size, self.n_configs = batch_size, n_configs
        self.on_told = on_told
        if lockstep is None and slots is not None:   # the Tune driver's: a pipeline
            lockstep = Pipeline(slots, math.ceil(n_configs / max(1, batch_size)))
        self.lockstep = lockstep    # draws independent of end order (keys: Tune trial ids)
        self._ends: dict[str, list[dict[str, Any]]] = {}   # rows on disk, tells held
        self.backend = BatchedJournalBackend(self.folder / "optuna.journal")
        # a batch's asks share one history: TPE builds its split and "below" once per batch
        seeded = spec.model_copy(update={"sampler": spec.sampler.model_copy(
            update={"seed": seed})})
        self.study = optuna.create_study(
            study_name=sweep_study_name(spec.name, sweep_run),
            storage=optuna_storage(spec, self.folder, backend=self.backend),
            sampler=round_cached(optuna_sampler(seeded)), directions=optuna_directions(spec),
            load_if_exists=True)
        self.space = define_by_run(spec)
        if grid and spec.sampler.kind == "grid":   # a fresh grid sweep: every point, queued
            for point in grid_points(spec):
                self.study.enqueue_trial(point)
        self.asked = 0
        self.open: dict[str, list[int]] = {}      # Tune trial id -> its Optuna numbers
        self.ask_s = self.tell_s = self.first_ask_s = 0.0

    def timings(self) -> dict[str, float]:
        """Seconds the driver spent asking Optuna (the first batch's asks apart) and telling
        it (rows written, tells): a slot waits for them between its batches."""
        return {"first_ask_s": self.first_ask_s, "asks_s": self.ask_s, "tells_s": self.tell_s}

    @property
    def done(self) -> bool:
        """Every config of the budget asked."""
        return self.asked >= self.n_configs

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The config of the next Tune trial: ``{"batch": [items]}`` (None: budget spent,
        see ``done``, or the lockstep waits for earlier batches' ends)."""
        n = min(self.batch_size, self.n_configs - self.asked)
        if n <= 0 or (self.lockstep is not None and not self.lockstep.may_ask()):
            return None
        t0 = time.perf_counter()
        items = []
        for i in range(n):
            t = self.study.ask()
            fixed = self.space(t)       # suggests first: t.params holds the values after it
            t.set_user_attr(TUNE_TRIAL_ID, f"{trial_id}#{i}")
            t.set_user_attr(SWEEP_RUN, self.sweep_run)
            items.append({"number": t.number, "params": {**t.params, **fixed}})
        self.backend.flush()
        self.asked += n
        self.open[trial_id] = [it["number"] for it in items]
        self.ask_s += time.perf_counter() - t0
        self.first_ask_s = self.first_ask_s or self.ask_s    # the first batch's asks
        if self.lockstep is not None:      # ends held until this ask was made
            for tid in self.lockstep.asked(trial_id):
                self._tell(tid)
        return {"batch": items}

    def complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """Record a finished Tune trial: its rows on disk first, then Optuna's tells (held,
        under a lockstep, until every ask that must not see it has been made)."""
        numbers = self.open.pop(trial_id, [])
        if not numbers:
            return
        t0 = time.perf_counter()
        rows = json.loads(result["batch_rows"]) if result and not error \
            and "batch_rows" in result else None
        if rows is None:   # the trial crashed after its retries: every config of it failed
            why = "trial crashed: the batch's Tune trial failed after its retries"
            rows = [{"number": n, "flat": {}, "metrics": {}, "reason": why} for n in numbers]
        for row in rows:
            row["reason"] = _row_reason(self.spec, row)
        _append_rows(self.folder, rows)
        self._ends[trial_id] = rows
        self.tell_s += time.perf_counter() - t0
        for tid in (self.lockstep.ended(trial_id) if self.lockstep is not None
                    else [trial_id]):
            self._tell(tid)

    def _tell(self, trial_id: str) -> None:
        from optuna.trial import TrialState

        t0 = time.perf_counter()
        rows = self._ends.pop(trial_id)
        for row in rows:
            values = _objective_values(self.spec, row["metrics"])
            if row["reason"]:
                self.study.tell(row["number"], state=TrialState.FAIL)
            else:
                self.study.tell(row["number"], values if len(values) > 1 else values[0])
        self.backend.flush()
        self.tell_s += time.perf_counter() - t0
        if self.lockstep is not None:
            self.lockstep.told(trial_id)
        if self.on_told is not None:
            self.on_told(len(rows))


def _append_rows(folder: Path, rows: list[dict[str, Any]]) -> None:
    with open(folder / BATCH_ROWS, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(folder: Path, study: Any, sweep_run: str) -> list[dict[str, Any]]:
    """The rows of this sweep's configs that count: final in Optuna, never superseded by a
    resumed re-run (the last row written for each, should a batch have been told twice)."""
    path = Path(folder) / BATCH_ROWS
    if not path.is_file():
        return []
    gone = set(study.user_attrs.get(SUPERSEDED, []))
    final = {t.number for t in study.get_trials(deepcopy=False)
             if t.state.is_finished() and t.user_attrs.get(SWEEP_RUN) == sweep_run
             and t.number not in gone}
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row["number"] in final:
                rows[row["number"]] = row
    return [rows[n] for n in sorted(rows)]


def trials_table(spec: SweepSpec, rows: Sequence[dict[str, Any]]
                 ) -> tuple[pd.DataFrame, dict[int, TrialParams]]:
    """The in-process search's trial table (``study.replay_search.ReplaySearch.trials``) and the
    params of every config, from batch rows."""
    table, params = [], {}
    for row in rows:
        p = None
        if row["flat"]:
            try:
                p = params_from_flat(row["flat"], spec)
            except EsperABError:
                p = None
        if p is not None:
            params[int(row["number"])] = p
        out: dict[str, Any] = {"number": int(row["number"]),
                               "state": "FAIL" if row["reason"] else "COMPLETE",
                               "label": p.label() if p else ""}
        out.update(p.as_params() if p else {})
        out.update(row["metrics"])
        out["reason"] = row["reason"]
        table.append(out)
    return pd.DataFrame(table), params


def compute_total(results: Any) -> float:
    """The sum of ``trial_compute_s`` over Tune's results (a ``ResultGrid``)."""
    return sum(float(v) for r in results
               if isinstance(v := (r.metrics or {}).get("trial_compute_s"), int | float))


def batch_slots(spec: SweepSpec, cpu_per_trial: float) -> int:
    """How many trials of ``spec`` run at once on the connected Ray cluster."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return min(spec.max_concurrent, max(1, int(cpus // max(cpu_per_trial, 1e-9))))


def batch_size(spec: SweepSpec, n_configs: int, cpu_per_trial: float,
               requested: int | None) -> int:
    return batch_size_for(spec, n_configs, batch_slots(spec, cpu_per_trial), requested)


def log_batched_search(life: Any, spec: SweepSpec, evidence: Evidence, study: Any,
                       wall_s: float, compute_s: float) -> None:
    """A batched sweep in MLflow, as the in-process replay sweep logs its search: every
    config in the parent's ``replay/trials.parquet``, the finalists as full child runs."""
    table, params = trials_table(spec, read_rows(life.folder, study, life.parent))
    search = ReplaySearch(spec=spec, study_name=sweep_study_name(spec.name, life.parent),
                          journal=life.folder / "optuna.journal", trials=table, params=params,
                          n_replicates=len(evidence.replicates), wall_s=wall_s,
                          cpu_s=compute_s)
    log_search(life.tracker, life.parent, search)
    life.tracker.set_tags(life.parent, {"esper_ab.search": "ray-tune-batched"})
    log_finalists(life.tracker, life.parent, spec, evidence, search,
                  n=max(spec.selection.top_k, spec.confirm.top_k if spec.confirm_fidelity else 0))
