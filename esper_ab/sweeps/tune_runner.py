"""Sweeps on Ray Tune + Optuna: the only module that imports ``ray.tune``.

``run_sweep(spec, ...)`` builds an ``OptunaSearch`` over the spec's conditional space (persistent
Optuna storage: a journal file next to the MLflow store, study name = sweep name), an optional
ASHA scheduler, and a ``Tuner`` with ``FailureConfig``, ``reuse_actors=True`` and per-trial
resources (CPUs and a GPU fraction). Each trial evaluates the sweep's replicates one by one
and reports once per replicate: ``replicates_evaluated`` is ASHA's time axis, so a weak
config is stopped after a few replicates (multi-fidelity over replicates). A trial runs on
CUDA when Ray assigned it a GPU that torch can see, and on the CPU otherwise (tagged).

Tracking happens in the driver (``_TrackingCallback`` -> ``esper_ab.tracking``): see there.

Ray is embedded and local by default; ``address`` joins a cluster (``auto``, ``ray://...``,
``host:port``). Token authentication (Ray's default) is kept, never switched off: see
``esper_ab.sweeps.auth``.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback, Checkpoint, CheckpointConfig, FailureConfig, RunConfig, TuneConfig

from esper_ab.errors import ConfigError
from esper_ab.fidelity import confirm_tune_sweep
from esper_ab.progress import report_note
from esper_ab.sweeps.resources import ResourcePlan
from esper_ab.sweeps.runtime import (
    DEFAULT_SCHEDULE_TIMEOUT_S,
    ScheduleWatch,
    connect_ray,
    device_for_trial,
    ensure_schedulable,
    evidence_for_sweep,
    plan_for_cluster,
    quiet_tune_console,
    read_state,
    trial_error_line,
    warm_worker,
    with_plan,
    write_state,
)
from esper_ab.sweeps.space import define_by_run, grid_points, params_from_flat, space_summary
from esper_ab.sweeps.spec import SweepSpec
from esper_ab.sweeps.studies import optuna_sampler, optuna_storage, sweep_dir_for
from esper_ab.tracking import BackgroundWriter, SweepTracker
from esper_ab.trial import Evidence, iter_trial, result_from_step

__all__ = ["SweepOptions", "SweepOutcome", "run_sweep", "warm_tune_worker"]


def warm_tune_worker() -> None:
    """Ray worker setup hook of a Tune sweep: the trial stack and this module (ray.tune)."""
    warm_worker()

RESULT_KEYS = ("replicates_evaluated", "trial_compute_s")


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


@dataclass(frozen=True)
class SweepOutcome:
    sweep_run_id: str
    experiment: str
    status: str                           # FINISHED / FAILED
    reason: str
    analysis: Any | None                  # esper_ab.sweeps.analysis.SweepAnalysis
    sweep_dir: Path
    wall_s: float                         # the whole call: Ray start, traces, fit, analysis
    fit_wall_s: float                     # Tuner.fit() alone
    trial_compute_s: float                # sum of the trials' own compute
    confirmation: Any | None = None       # the held-out verdict (esper_ab.fidelity.holdout)


# -- the trial, as Tune runs it -----------------------------------------------------------
def _write(folder: Path, name: str, data: Any) -> None:
    (folder / name).write_text(json.dumps(data, indent=1, default=str, allow_nan=True))


def _trainable(config: dict[str, Any], *, spec: SweepSpec, evidence: Evidence,
               n_boot: int, n_perm: int) -> None:
    """One trial. With a scheduler it reports once per replicate (cumulative metrics: the
    scheduler's time axis); without one it reports once, at the end, and ships the
    per-replicate curve in its checkpoint (``steps.json``) -- every report is a round trip
    to the driver. ``trial_compute_s`` counts only the trial's own work (replay + statistics
    + its tables), not the time spent in ``tune.report``. Closed-loop trials checkpoint every
    step (a retry resumes there); replay steps cost milliseconds to redo."""
    params = params_from_flat(config, spec)
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.loads((Path(d) / "progress.json").read_text())["replicates_evaluated"]
    device, device_note = device_for_trial()
    where = {"device": device, "device_note": device_note, "gpu_ids": str(ray.get_gpu_ids()),
             "node_id": ray.get_runtime_context().get_node_id()}
    per_step = spec.scheduler.kind != "none"
    compute, curve = 0.0, []
    steps = iter_trial(params, evidence, baseline=spec.baseline, start=start,
                       alpha=spec.selection.alpha, n_boot=n_boot, n_perm=n_perm)
    while True:
        t0 = time.perf_counter()
        step = next(steps, None)
        if step is None:
            break
        folder = None
        if step.final or spec.fidelity == "closed_loop":
            folder = Path(tempfile.mkdtemp(prefix="esper_ab_trial_"))
            _write(folder, "progress.json", {"replicates_evaluated": step.replicates_evaluated})
        if not per_step and not step.final:
            curve.append({"step": step.replicates_evaluated, "metrics": dict(step.metrics)})
        if step.final:
            res = result_from_step(params, step, evidence)
            res.decisions.to_csv(folder / "decisions.csv", index=False)
            res.per_blueprint.to_csv(folder / "per_blueprint.csv", index=False)
            _write(folder, "gate_config.json", res.gate_config.to_dict())
            _write(folder, "analysis.json", res.analysis)
            _write(folder, "params.json", params.as_params())
            _write(folder, "steps.json", curve)
        compute += time.perf_counter() - t0
        if not (per_step or step.final or folder is not None):
            continue
        metrics = {**step.metrics, "replicates_evaluated": step.replicates_evaluated,
                   "trial_compute_s": compute, **where}
        if folder is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=Checkpoint.from_directory(str(folder)))
            shutil.rmtree(folder, ignore_errors=True)


# -- tracking from the driver --------------------------------------------------------------
def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


class _TrackingCallback(Callback):
    """Opens, feeds and ends the child run of every trial. Runs in the driver; every MLflow
    call goes through the tracker's ordered background writer, so Tune never waits. Its
    ``watch`` reports finished trials and fails a sweep whose trials cannot be scheduled."""

    def __init__(self, tracker: SweepTracker, parent_id: str, spec: SweepSpec,
                 watch: ScheduleWatch) -> None:
        self.tracker, self.parent_id, self.spec, self.watch = tracker, parent_id, spec, watch
        self.writer = BackgroundWriter(tracker)
        self.runs: dict[str, Any] = {}      # trial id -> Future of its run id

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.watch.step([t.status for t in trials])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runs": {}}

    def _run(self, trial: Any) -> Any:
        fut = self.runs.get(trial.trial_id)
        if fut is None:
            params = params_from_flat(trial.config, self.spec)
            fut = self.writer.submit(
                "trial_run", self.parent_id, trial_id=trial.trial_id, run_name=params.strategy,
                params={**params.as_params(), "trial_id": trial.trial_id},
                tags={"esper_ab.label": params.label()})
            self.runs[trial.trial_id] = fut
        return fut

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
        self.writer.submit("end_run", rid, "FAILED", f"trial crashed after "
                           f"{trial.num_failures} attempt(s): {trial_error_line(trial)}")
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
                   if not _finite(result.get(f"g2.{o.metric}"))]
            reason = f"completed all {total} replicates"
            if nan:
                reason += f"; objective(s) {nan} are NaN (undefined for this config): the " \
                          "trial is kept but cannot be ranked"
            self.writer.submit("end_run", rid, "FINISHED", reason)
        else:
            self.writer.submit("set_tags", rid, {"esper_ab.stopped_early": "true"})
            self.writer.submit("end_run", rid, "FINISHED", f"stopped early by the scheduler "
                               f"after {done} of {total} replicates")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.drain()


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# -- searcher, scheduler, state -----------------------------------------------------------
def _searcher(spec: SweepSpec, folder: Path) -> tuple[Any, int]:
    from ray.tune.search.optuna import OptunaSearch

    metric = [f"g2.{o.metric}" for o in spec.objectives]
    mode = [o.direction for o in spec.objectives]
    points = grid_points(spec) if spec.sampler.kind == "grid" else None
    searcher = OptunaSearch(
        space=define_by_run(spec), metric=metric if spec.multi_objective else metric[0],
        mode=mode if spec.multi_objective else mode[0], sampler=optuna_sampler(spec),
        study_name=spec.name, storage=optuna_storage(spec, folder), points_to_evaluate=points)
    return searcher, (len(points) if points else spec.num_samples)


def _scheduler(spec: SweepSpec) -> Any:
    if spec.scheduler.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    o = spec.objectives[0]
    return ASHAScheduler(time_attr="replicates_evaluated", metric=f"g2.{o.metric}",
                         mode=o.direction, max_t=len(spec.replicates),
                         grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)


def _trainable_for(spec: SweepSpec, ev: Evidence, opts: SweepOptions, plan: ResourcePlan) -> Any:
    fn = tune.with_parameters(_trainable, spec=spec, evidence=ev,
                              n_boot=min(opts.n_boot, 200), n_perm=min(opts.n_perm, 500))
    return tune.with_resources(fn, {"cpu": plan.cpu, "gpu": plan.gpu})


def run_sweep(spec: SweepSpec, *, evidence: Evidence | None = None,
              options: SweepOptions = SweepOptions()) -> SweepOutcome:
    """Run (or ``options.resume``) the sweep; every run ends FINISHED or FAILED."""
    from esper_ab.sweeps.summary import summarize_sweep

    t_start = time.perf_counter()
    tracker = SweepTracker(options.tracking_uri)
    folder = sweep_dir_for(spec, tracker.uri, options.storage_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(folder)
    if options.resume:
        if not state or not tune.Tuner.can_restore(state.get("tune_path", "")):
            raise ConfigError(f"--resume: sweep {spec.name!r} has no resumable state in "
                              f"{folder}: run it without --resume first")
        if state.get("status") == "finished":
            raise ConfigError(f"--resume: sweep {spec.name!r} (run {state['sweep_run_id']}) "
                              "already finished: run it without --resume for a new one")
        if state.get("spec_hash") != spec.spec_hash():
            raise ConfigError(f"--resume: the spec of sweep {spec.name!r} changed since it "
                              "started: resume with the same file and options, or start anew")
    elif state.get("status") == "running":   # abandoned (killed driver): close its runs
        tracker.close_orphans(state["sweep_run_id"], "abandoned: a new sweep started without "
                              "--resume")
        tracker.end_run(state["sweep_run_id"], "FAILED", "abandoned: the driver died and a new "
                        "sweep started without --resume")

    started = connect_ray(options.address, num_cpus=options.num_cpus, verbose=options.verbose,
                          setup_hook="esper_ab.sweeps.tune_runner.warm_tune_worker")
    parent = ""
    restore_console = quiet_tune_console(options.verbose)   # no Tune table unless verbose
    cache = Path(options.cache_dir) if options.cache_dir else folder.parent / ".esper_ab_cache"
    previous = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        plan = plan_for_cluster(spec, options.address)   # infeasible: fails before any run
        report_note(options.progress, plan.describe())
        watch = ScheduleWatch(plan, timeout_s=options.schedule_timeout_s, progress=options.progress)
        run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if options.resume:
            parent = state["sweep_run_id"]
            tracker.reopen(parent)
            write_state(folder, status="running")
        else:
            parent = tracker.start_sweep(spec, space=space_summary(spec), run_name=run_name,
                                         tags={"esper_ab.resources": plan.tag()})
        if evidence is None:   # the recording task and the trials: FAILED runs if unplaced
            evidence = evidence_for_sweep(spec, cache_dir=cache, plan=plan,
                                          schedule_timeout_s=watch.timeout_s)
        ensure_schedulable(plan, what="a trial", timeout_s=watch.timeout_s)
        trainable = _trainable_for(spec, evidence, options, plan)
        if options.resume:
            tuner = tune.Tuner.restore(state["tune_path"], trainable, resume_unfinished=True,
                                       resume_errored=True)
            for cb in _callbacks(tuner):
                cb.watch = watch
        else:
            searcher, n = _searcher(spec, folder)
            watch.total = n
            callback = _TrackingCallback(tracker, parent, spec, watch)
            tuner = tune.Tuner(
                trainable,
                tune_config=TuneConfig(search_alg=searcher, scheduler=_scheduler(spec),
                                       num_samples=n, max_concurrent_trials=spec.max_concurrent,
                                       reuse_actors=True, trial_dirname_creator=_trial_dirname),
                run_config=RunConfig(
                    name=run_name, storage_path=str((folder / "tune").resolve()),
                    failure_config=FailureConfig(max_failures=spec.failure.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=1),
                    callbacks=[callback], verbose=options.verbose))
            write_state(folder, sweep_run_id=parent, tune_path=str(folder / "tune" / run_name),
                         spec_hash=spec.spec_hash(), experiment=spec.experiment_name,
                         status="running", n_trials=n)
        t_fit = time.perf_counter()
        grid = tuner.fit()
        fit_wall = time.perf_counter() - t_fit
        for cb in _callbacks(tuner):
            cb.writer.drain()
        unfinished = [r for r in tracker.close_orphans(parent, "interrupted before it ended: "
                                                       "resume with --resume")]
        if unfinished or _interrupted(grid, int(read_state(folder)["n_trials"])):
            raise KeyboardInterrupt
        analysis = summarize_sweep(tracker, spec.experiment_name, parent, n_boot=options.n_boot,
                                   n_perm=options.n_perm, log=True, progress=options.progress)
        reason = analysis.reason
        confirmation = confirm_tune_sweep(      # judged on replicates no trial saw
            tracker, parent, with_plan(spec, plan), analysis, cache_dir=cache,
            n_boot=options.n_boot, n_perm=options.n_perm) if spec.confirm_fidelity else None
        if confirmation is not None:
            reason = (f"confirmed on held-out replicates {list(confirmation.replicates)}: "
                      f"{confirmation.verdict.reason} | search stage: {reason}")
        tracker.end_run(parent, "FINISHED", reason)
        write_state(folder, status="finished")
        return SweepOutcome(parent, spec.experiment_name, "FINISHED", reason, analysis, folder,
                            time.perf_counter() - t_start, fit_wall, _compute_total(grid),
                            confirmation)
    except KeyboardInterrupt:
        if parent:
            why = f"interrupted: resume with 'esper-ab sweep SPACE.yaml --resume' ({folder})"
            tracker.close_orphans(parent, why)
            tracker.end_run(parent, "FAILED", why)
            write_state(folder, status="interrupted")
        raise
    except BaseException as exc:
        if parent:
            why = f"sweep failed: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            tracker.close_orphans(parent, why)
            tracker.end_run(parent, "FAILED", why)
            write_state(folder, status="failed")
        raise
    finally:
        restore_console()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if started:
            ray.shutdown()


def _interrupted(grid: Any, expected: int) -> bool:
    """Tune returns normally after a SIGINT: missing or unfinished trials tell."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    return len(grid) < expected or any(t.status not in ("TERMINATED", "ERROR")
                                       for t in trials)


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _callbacks(tuner: Any) -> list[_TrackingCallback]:
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    return [c for c in getattr(run_config, "callbacks", None) or []
            if isinstance(c, _TrackingCallback)]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _compute_total(grid: Any) -> float:
    total = 0.0
    for r in grid:
        v = (r.metrics or {}).get("trial_compute_s")
        total += float(v) if isinstance(v, int | float) else 0.0
    return total
