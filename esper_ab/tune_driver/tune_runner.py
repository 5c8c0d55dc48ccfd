"""Sweeps on Ray Tune + Optuna: the only module that imports ``ray.tune``.

``run_sweep(spec, ...)`` builds a ``Tuner`` (``FailureConfig``, ``reuse_actors=True``, per-trial
CPUs and GPU fraction) over the spec's conditional space with persistent Optuna storage (a
journal next to the MLflow store, study name = sweep name). At replay fidelity a Tune trial
is a batch of Optuna configs scored in one pass (``esper_ab.tune_driver.batches``; MLflow: the
table of every config and the finalists as child runs). Otherwise (``batch_size`` 1, closed
loop) a trial is one config through ``OptunaSearch``, reporting once per replicate for
ASHA (multi-fidelity over replicates), tracked from the driver (``_TrackingCallback``). A
trial runs on CUDA when Ray gave it a GPU that torch sees, else on the CPU (tagged). Trial
bodies: ``esper_ab.tune_driver.trainables``. Ray is embedded and local by default; ``address``
joins a cluster; token authentication is kept, never switched off (``esper_ab.study.auth``).
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback, Checkpoint, CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from esper_ab.progress import report_note
from esper_ab.study.holdout import confirm_tune_sweep
from esper_ab.study.lifecycle import sweep_lifecycle
from esper_ab.study.preflight import check_ray_address, not_a_file
from esper_ab.study.recording import sweep_evidence
from esper_ab.study.resources import ResourcePlan
from esper_ab.study.resume import (
    DurableSearch,
    SweepIncomplete,
    count_final,
    open_study,
    reconcile,
    resumable_state,
    resumed_seed,
    trial_runs,
)
from esper_ab.study.runtime import (
    DEFAULT_SCHEDULE_TIMEOUT_S,
    ScheduleWatch,
    connect_ray,
    ensure_schedulable,
    finite_number,
    plan_for_cluster,
    quiet_tune_console,
    shutdown_ray,
    trial_dirname,
    trial_error_line,
    with_plan,
    write_state,
)
from esper_ab.study.space import define_by_run, grid_points, params_from_flat, space_summary
from esper_ab.study.spec import SweepSpec
from esper_ab.study.studies import Lockstep, optuna_sampler, optuna_storage, sweep_study_name
from esper_ab.tracking import TRIAL_ID, BackgroundWriter, SweepTracker
from esper_ab.trial import Evidence
from esper_ab.tune_driver.batches import BatchPlanner, batch_size, compute_total, log_batched_search
from esper_ab.tune_driver.trainables import TuneHooks, batch_trial, config_trial

__all__ = ["SweepIncomplete", "SweepOptions", "SweepOutcome", "run_sweep"]

RESULT_KEYS = ("replicates_evaluated", "trial_compute_s")
START_PHASES = ("connect_s", "tracking_storage_s", "evidence_s", "schedulable_tuner_s")


@dataclass(frozen=True)
class SweepOptions:
    address: str | None = None            # None: embedded local Ray (or RAY_ADDRESS)
    tracking_uri: str | None = None       # None: sqlite:///mlflow.db in the working dir
    storage_dir: str | None = None        # None: <store dir>/esper_ab_sweeps
    resume: bool = False
    verbose: int = 0
    num_cpus: int | None = None           # local Ray only
    n_boot: int = 1000                    # final cross-trial analysis
    n_perm: int = 2000
    cache_dir: str | None = None          # episodes; None: .esper_ab_cache beside the folder
    schedule_timeout_s: float = DEFAULT_SCHEDULE_TIMEOUT_S   # a task/trial unscheduled: fail
    progress: Callable[[str, int, int], None] | None = field(default=None, compare=False)
    batch_size: int | None = None         # configs per Tune trial; None: auto (batches.py)


@dataclass(frozen=True)
class SweepOutcome:
    sweep_run_id: str
    experiment: str
    status: str                           # FINISHED / FAILED
    reason: str
    analysis: Any | None                  # esper_ab.study.analysis.SweepAnalysis
    sweep_dir: Path
    wall_s: float                         # the whole call: Ray start, traces, fit, analysis
    fit_wall_s: float                     # Tuner.fit() alone
    trial_compute_s: float                # sum of the trials' own compute
    confirmation: Any | None = None       # the held-out verdict (esper_ab.study.holdout)
    phases: dict[str, float] = field(default_factory=dict)   # the start's parts, seconds


# -- the trial: esper_ab.tune_driver.trainables, run with Tune's hooks (workers import it alone) --
_HOOKS = TuneHooks(tune.report, tune.get_checkpoint, Checkpoint.from_directory)


class _BatchSearch(Searcher):
    """Tune's searcher of a batched sweep: each suggestion is a batch of Optuna configs."""

    def __init__(self, planner: BatchPlanner) -> None:
        super().__init__(metric="configs", mode="max")
        self.planner = planner

    def suggest(self, trial_id: str) -> dict | None:
        config = self.planner.suggest(trial_id)   # None: spent, or the lockstep waits
        return Searcher.FINISHED if config is None and self.planner.done else config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if "batch_rows" in result:   # told at the report: Tune stages the next round's
            self.planner.complete(trial_id, result, False)   # trial on this live actor

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.planner.complete(trial_id, result, error)   # no-op once told at the result


class _BatchWatch(Callback):
    """The schedule watch of a batched sweep (MLflow is written after ``fit``)."""

    def __init__(self, watch: ScheduleWatch) -> None:
        self.watch, self.first = watch, {}   # when the first trial result came: perf_counter

    def on_trial_result(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.first.setdefault("result", time.perf_counter())

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.watch.step([t.status for t in trials])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.watch.finished(trial, trials)

    on_trial_error = on_trial_complete


# -- tracking from the driver --------------------------------------------------------------
class _TrackingCallback(Callback):
    """Opens, feeds and ends the child run of every trial. Runs in the driver; every MLflow
    call goes through the tracker's ordered background writer, so Tune never waits. Its
    ``watch`` reports finished trials and fails a sweep whose trials cannot be scheduled."""

    def __init__(self, tracker: SweepTracker, parent_id: str, spec: SweepSpec,
                 watch: ScheduleWatch, searcher: Any | None = None) -> None:
        self.tracker, self.parent_id, self.spec, self.watch = tracker, parent_id, spec, watch
        self.searcher = searcher            # _DurableOptunaSearch: told after MLflow
        self.writer = BackgroundWriter(tracker)
        self.runs: dict[str, Any] = {}      # trial id -> Future of its run id

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.watch.step([t.status for t in trials])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runs": {}, "searcher": None}

    def _run(self, trial: Any) -> Any:
        fut = self.runs.get(trial.trial_id)
        if fut is None:
            params = params_from_flat(trial.config, self.spec)
            reuse = self.searcher.reuse_run(trial.trial_id) if self.searcher else None
            if reuse:   # a resumed re-run of an interrupted config: continue its run
                self.writer.submit("set_tags", reuse, {TRIAL_ID: trial.trial_id,
                                                       "esper_ab.resumed": "true"})
                fut = Future()
                fut.set_result(reuse)
            else:
                fut = self.writer.submit(
                    "trial_run", self.parent_id, trial_id=trial.trial_id,
                    run_name=params.strategy, number=self.searcher.number(trial.trial_id)
                    if self.searcher else None,
                    params={**params.as_params(), "trial_id": trial.trial_id},
                    tags={"esper_ab.label": params.label()})
            self.runs[trial.trial_id] = fut
        return fut

    def _end(self, trial: Any, rid: Any, status: str, reason: str) -> None:
        """End the trial's run; Optuna hears of it once that is written."""
        commit = self.searcher.commit if self.searcher else (lambda _tid: None)
        self.writer.submit_then(lambda: commit(trial.trial_id), "end_run", rid, status, reason)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit("ensure_running", self._run(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        rid = self._run(trial)
        keep = {k: v for k, v in result.items() if k.startswith("g2.") or k in RESULT_KEYS}
        self.writer.submit("log_metrics", rid, keep,
                           step=int(result.get("replicates_evaluated", 0)))
        self.writer.submit("set_tags", rid, {f"esper_ab.{k}": result.get(k, "") for k in
                                             ("device", "device_note", "gpu_ids", "node_id")})

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.submit("set_tags", self._run(trial), {
            "esper_ab.attempts": trial.num_failures + 1,
            "esper_ab.last_error": trial_error_line(trial)})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rid = self._run(trial)
        self.writer.submit("set_tags", rid, {"esper_ab.attempts": trial.num_failures})
        self._end(trial, rid, "FAILED", f"trial crashed after {trial.num_failures} "
                  f"attempt(s): {trial_error_line(trial)}")
        self.watch.finished(trial, trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.watch.finished(trial, trials)
        rid = self._run(trial)
        result = trial.last_result or {}
        done = int(result.get("replicates_evaluated", 0))
        total = len(self.spec.replicates)
        if done >= total and trial.checkpoint is not None:
            folder = Path(tempfile.mkdtemp(prefix="esper_ab_ckpt_"))
            trial.checkpoint.to_directory(str(folder))
            self.writer.submit("log_trial_folder", rid, str(folder), remove=True)
            nan = [o.metric for o in self.spec.objectives
                   if not finite_number(result.get(f"g2.{o.metric}"))]
            reason = f"completed all {total} replicates"
            if nan:
                reason += f"; objective(s) {nan} are NaN (undefined for this config): the " \
                          "trial is kept but cannot be ranked"
            self._end(trial, rid, "FINISHED", reason)
        else:
            self.writer.submit("set_tags", rid, {"esper_ab.stopped_early": "true"})
            self._end(trial, rid, "FINISHED", f"stopped early by the scheduler after {done} "
                      f"of {total} replicates")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.drain()


# -- searcher, scheduler ------------------------------------------------------------------
class _DurableOptunaSearch(DurableSearch, OptunaSearch):
    """``OptunaSearch`` told of a trial's end only once MLflow has it (``DurableSearch``)."""


def _searcher(spec: SweepSpec, storage: Any, *, sweep_run: str, seed: int,
              fresh: bool, n: int) -> _DurableOptunaSearch:
    metric = [f"g2.{o.metric}" for o in spec.objectives]
    mode = [o.direction for o in spec.objectives]
    points = grid_points(spec) if spec.sampler.kind == "grid" and fresh else None
    seeded = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"seed": seed})})
    return _DurableOptunaSearch(
        space=define_by_run(spec), metric=metric if spec.multi_objective else metric[0],
        mode=mode if spec.multi_objective else mode[0], sampler=optuna_sampler(seeded),
        study_name=sweep_study_name(spec.name, sweep_run), storage=storage,
        points_to_evaluate=points, sweep_run=sweep_run, lockstep=Lockstep(spec.max_concurrent, n),
        numbered=fresh)


def _scheduler(spec: SweepSpec) -> Any:
    if spec.scheduler.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    o = spec.objectives[0]
    return ASHAScheduler(time_attr="replicates_evaluated", metric=f"g2.{o.metric}",
                         mode=o.direction, max_t=len(spec.replicates),
                         grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)


def _trainable_for(spec: SweepSpec, evidence: Evidence, options: SweepOptions,
                   plan: ResourcePlan, batch: int = 1) -> Any:
    fn = tune.with_parameters(batch_trial, spec=spec, evidence_ref=[ray.put(evidence)],
                              hooks=_HOOKS) \
        if batch > 1 else tune.with_parameters(   # batches: the evidence goes by reference
            config_trial, spec=spec, evidence=evidence, n_boot=min(options.n_boot, 200),
            n_perm=min(options.n_perm, 500), hooks=_HOOKS)
    return tune.with_resources(fn, {"cpu": plan.cpu, "gpu": plan.gpu})


# -- the sweep ------------------------------------------------------------------------------
RESUME_HINT = "'esper-ab sweep SPACE.yaml --resume'"


def _tuner(spec: SweepSpec, life: Any, trainable: Any, watch: ScheduleWatch, n: int,
           study: Any, storage: Any, options: SweepOptions,
           batch: int = 1) -> tuple[Any, Any, Any] | None:
    """A fresh ``Tuner``, its callback and ``BatchPlanner`` (None off batches) for the trials
    still to run (None: none left); on ``--resume`` the study is reconciled with MLflow
    first. ``batch`` > 1: each Tune trial scores that many configs (``_BatchSearch``)."""
    remaining, seed = n, spec.sampler.seed
    if options.resume:
        plan = reconcile(study, trial_runs(life.tracker, life.parent), sweep_run=life.parent,
                         metrics=[f"g2.{o.metric}" for o in spec.objectives])
        remaining, seed = plan.remaining(n), resumed_seed(seed, plan.n_trials)
        report_note(options.progress, f"resume: {plan.done} of {n} trial(s) done "
                    f"({plan.told_from_mlflow} recovered from MLflow), {plan.rerun} "
                    f"interrupted config(s) to re-run, {remaining} to go")
    watch.total = remaining
    if remaining == 0:
        return None
    planner = None
    if batch > 1:
        searcher, callback = _BatchSearch(planner := BatchPlanner(
            spec, life.folder, sweep_run=life.parent, seed=seed, batch_size=batch,
            n_configs=remaining, grid=not options.resume,
            slots=spec.max_concurrent)), \
            _BatchWatch(watch)
        remaining = watch.total = math.ceil(remaining / batch)
    else:
        searcher = _searcher(spec, storage, sweep_run=life.parent, seed=seed,
                             fresh=not options.resume, n=remaining)
        callback = _TrackingCallback(life.tracker, life.parent, spec, watch, searcher)
        callback.writer.on_disk_full = life.disk_full   # a run's end unwritable: stop
    run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    write_state(life.folder, tune_path=str(life.folder / "tune" / run_name))
    return tune.Tuner(
        trainable,
        tune_config=TuneConfig(search_alg=searcher,
                               scheduler=_scheduler(spec) if batch == 1 else None,
                               num_samples=remaining, max_concurrent_trials=spec.max_concurrent,
                               reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=RunConfig(
            name=run_name, storage_path=str((life.folder / "tune").resolve()),
            failure_config=FailureConfig(max_failures=spec.failure.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[callback], verbose=options.verbose)), callback, planner


def run_sweep(spec: SweepSpec, *, evidence: Evidence | None = None,
              options: SweepOptions = SweepOptions()) -> SweepOutcome:
    """Run (or ``options.resume``) the sweep. The lifecycle (``esper_ab.study.lifecycle``)
    ends every run FINISHED or FAILED with its reason; a resume continues from the Optuna
    journal and MLflow (``esper_ab.study.resume``), whatever stopped the driver."""
    from esper_ab.study.summary import summarize_sweep

    t_start = time.perf_counter()
    check_ray_address(options.address)
    not_a_file(options.cache_dir, "--cache-dir")
    n = len(grid_points(spec)) if spec.sampler.kind == "grid" else spec.num_samples
    with sweep_lifecycle(spec, tracking_uri=options.tracking_uri,
                         storage_dir=options.storage_dir, what="sweep", resumable=True,
                         resume_hint=RESUME_HINT) as life:
        state = resumable_state(spec, life.folder, options.resume)
        if not options.resume:
            life.close_abandoned()
        life.connected(connect_ray(options.address, num_cpus=options.num_cpus,
                                   verbose=options.verbose,
                                   setup_hook="esper_ab.tune_driver.trainables.warm_worker"),
                       shutdown_ray)
        marks = [t_start, time.perf_counter()]   # then: storage, evidence, Tuner (START_PHASES)
        life.at_exit(quiet_tune_console(options.verbose))   # no Tune table unless verbose
        cache = Path(options.cache_dir) if options.cache_dir else \
            life.folder.parent / ".esper_ab_cache"
        plan = plan_for_cluster(spec, options.address)   # infeasible: fails before any run
        report_note(options.progress, plan.describe())
        watch = ScheduleWatch(plan, timeout_s=options.schedule_timeout_s,
                              progress=options.progress)
        if options.resume:
            life.reopen(state["sweep_run_id"])
        else:
            life.start(spec, space=space_summary(spec),
                       run_name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                       tags={"esper_ab.resources": plan.tag()},
                       state={"spec_hash": spec.spec_hash(), "n_trials": n,
                              "experiment": spec.experiment_name})
        storage = optuna_storage(spec, life.folder)
        study = open_study(spec, storage, life.parent)
        marks.append(time.perf_counter())
        if evidence is None:
            evidence = sweep_evidence(spec, cache_dir=cache, progress=options.progress,
                                      schedule_timeout_s=watch.timeout_s,
                                      verbose=options.verbose)
        marks.append(time.perf_counter())
        ensure_schedulable(plan, what="a trial", timeout_s=watch.timeout_s)
        batch = batch_size(spec, n, plan.cpu, options.batch_size)
        todo = _tuner(spec, life, _trainable_for(spec, evidence, options, plan, batch), watch,
                      n, study, storage, options, batch)
        t_fit, grid = time.perf_counter(), []
        marks.append(t_fit)
        phases = {k: marks[i + 1] - marks[i] for i, k in enumerate(START_PHASES)} | {
            "fit_started_at": time.time()}
        if todo is not None:
            with life.fitting():
                grid = todo[0].fit()
            if batch == 1:
                todo[1].writer.drain()
            else:
                phases.update({f"first_{k}_s": t - t_fit for k, t in todo[1].first.items()},
                              **todo[2].timings())
        fit_wall = time.perf_counter() - t_fit
        if life.interrupted:
            raise KeyboardInterrupt
        done = count_final(study, life.parent)
        if done < n or life.tracker.close_orphans(life.parent, "the trial never ended"):
            raise SweepIncomplete(f"Tune returned with {done} of {n} trial(s) ended: resume "
                                  f"with {RESUME_HINT}")
        if batch > 1:
            log_batched_search(life, spec, evidence, study, fit_wall, compute_total(grid))
        analysis = summarize_sweep(life.tracker, spec.experiment_name, life.parent,
                                   n_boot=options.n_boot, n_perm=options.n_perm, log=True,
                                   progress=options.progress)
        reason = analysis.reason
        confirmation = confirm_tune_sweep(      # judged on replicates no trial saw
            life.tracker, life.parent, with_plan(spec, plan), analysis, cache_dir=cache,
            n_boot=options.n_boot, n_perm=options.n_perm) if spec.confirm_fidelity else None
        if confirmation is not None:
            reason = (f"confirmed on held-out replicates {list(confirmation.replicates)}: "
                      f"{confirmation.verdict.reason} | search stage: {reason}")
        life.finish(reason)
        return SweepOutcome(life.parent, spec.experiment_name, "FINISHED", reason, analysis,
                            life.folder, time.perf_counter() - t_start, fit_wall,
                            compute_total(grid), confirmation, phases)
