"""Record the traces of a sweep space: every workload x replicate episode, in parallel as Ray
tasks (``esper-ab record``), and load them back for replay.

An episode is cached on disk by ``esper_ab.episodes.runner.run_episode`` (content hash of its config,
the replicate and the device type); recording skips every cached episode without starting a
task, so an interrupted recording resumes where it stopped. Each task runs where Ray puts it,
on CUDA when it was given a GPU that torch sees (the spec's ``resources``), on the CPU
otherwise. The tables are written to ``out`` as ``<workload>-r<replicate>-seeds.parquet`` /
``-trace.parquet`` (+ ``-episode.json``), the layout ``esper-ab replay --traces`` reads.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from esper_ab.errors import DataError
from esper_ab.study.spec import SweepSpec

__all__ = ["EpisodeJob", "RecordOutcome", "episode_jobs", "load_spec_traces", "record_space",
           "sweep_evidence"]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EpisodeJob:
    workload: str
    replicate: int
    config: Any             # esper_ab.episodes.runner.EpisodeConfig

    @property
    def prefix(self) -> str:
        return f"{self.workload}-r{self.replicate}-"


@dataclass(frozen=True)
class RecordOutcome:
    out_dir: Path
    jobs: tuple[EpisodeJob, ...]
    recorded: int            # episodes computed by this call
    cached: int              # episodes found in the cache (no task started)
    compute_s: float         # summed CPU seconds of the recording tasks (this call)
    wall_s: float
    devices: tuple[str, ...]  # device of each recording task


def episode_jobs(spec: SweepSpec, *, replicates: list[int] | None = None) -> list[EpisodeJob]:
    """Every workload x replicate of the space, search and confirmation replicates both
    (``replicates`` overrides them)."""
    reps = spec.all_replicates if replicates is None else replicates
    # one config per workload, shared by its replicates: it is validated once, and whether
    # its forks are batched (a host build, cached on the config) is decided once
    configs = [(entry.name, entry.episode_config()) for entry in spec.workloads]
    return [EpisodeJob(name, int(r), config) for name, config in configs for r in reps]


def _cache_folder(job: EpisodeJob, cache_dir: Path) -> Path | None:
    """The cache folder holding this episode (recorded on any device type), if any."""
    from esper_ab.episodes.runner import episode_key
    from esper_ab.episodes.tables import cached_tables

    for device in ("cpu", "cuda"):
        folder = cache_dir / "episodes" / episode_key(job.config, job.replicate, device)
        if cached_tables(folder):    # verified against its index (episodes._cache)
            return folder
    return None


def _copy_out(folder: Path, job: EpisodeJob, out_dir: Path) -> None:
    from esper_ab.episodes.tables import META_FILE, SEED_FILE, TRACE_FILE

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (SEED_FILE, TRACE_FILE, META_FILE):
        shutil.copyfile(folder / name, out_dir / f"{job.prefix}{name}")


def _record_task(job: EpisodeJob, cache_dir: str, threads: int) -> tuple[str, float]:
    """Ray task: run (and cache) one episode on the assigned device; returns the device and
    the CPU seconds of the task's process."""
    import torch

    from esper_ab.episodes.runner import run_episode
    from esper_ab.study.runtime import device_for_trial

    torch.set_num_threads(max(1, threads))
    device, _ = device_for_trial()
    c0 = time.process_time()
    run_episode(job.config, replicate=job.replicate, cache_dir=cache_dir, device=device)
    return device, time.process_time() - c0


def record_space(spec: SweepSpec, *, out_dir: str | Path, cache_dir: str | Path,
                 address: str | None = None, replicates: list[int] | None = None,
                 progress: Progress | None = None, schedule_timeout_s: float = 60.0,
                 verbose: int = 0) -> RecordOutcome:
    """Record every episode of ``spec`` that is not cached yet, as parallel Ray tasks, and
    write all of them to ``out_dir``. A shared ``cache_dir`` (local disk, or shared storage
    on a cluster) is what makes the recording resumable. The tasks get the space's resources
    on the cluster (``gpu: auto`` resolved there); a request no node can hold fails at once,
    and one that cannot be scheduled within ``schedule_timeout_s`` fails with what is missing.
    ``progress("record", done, total)`` after each episode."""
    import ray

    from esper_ab.progress import report_note
    from esper_ab.study.runtime import connect_ray, ensure_schedulable, plan_for_cluster

    t0 = time.perf_counter()
    out, cache = Path(out_dir).resolve(), Path(cache_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    jobs = episode_jobs(spec, replicates=replicates)
    todo = [j for j in jobs if _cache_folder(j, cache) is None]
    done, compute, devices = len(jobs) - len(todo), 0.0, []
    if progress is not None:
        progress("record", done, len(jobs))
    if todo:
        started = connect_ray(address, verbose=verbose)
        try:
            plan = plan_for_cluster(spec, address)
            if started:   # a caller that started Ray has said what it uses
                report_note(progress, plan.describe())
            ensure_schedulable(plan, what="a recording task", timeout_s=schedule_timeout_s)
            task = ray.remote(_record_task).options(num_cpus=plan.cpu, num_gpus=plan.gpu,
                                                    max_retries=1)
            threads = max(1, int(plan.cpu))
            pending = [task.remote(j, str(cache), threads) for j in todo]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                device, seconds = ray.get(ready[0])
                devices.append(device)
                compute += seconds
                done += 1
                if progress is not None:
                    progress("record", done, len(jobs))
        finally:
            if started:
                ray.shutdown()
    for job in jobs:
        folder = _cache_folder(job, cache)
        if folder is None:   # a task wrote its cache on another machine's disk
            raise DataError(f"episode {job.prefix.rstrip('-')} is not in the cache {cache} "
                            "after recording: on a cluster, give --cache-dir on storage every "
                            "node shares")
        _copy_out(folder, job, out)
    return RecordOutcome(out, tuple(jobs), recorded=len(todo), cached=len(jobs) - len(todo),
                         compute_s=compute, wall_s=time.perf_counter() - t0,
                         devices=tuple(devices))


def load_spec_traces(spec: SweepSpec, directory: str | Path, *,
                     replicates: list[int] | None = None) -> Any:
    """The ``TraceSet`` of the space's workloads x replicates from a folder written by
    ``record_space`` (``esper-ab record``). With several workloads, seed ids are prefixed
    with ``<workload>:`` (each replicate stays one independent unit), as sweeps do."""
    from esper_ab.replay import TraceSet

    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"--traces={str(directory)!r} is not a folder: record the traces "
                        "first with 'esper-ab record SPACE.yaml --out DIR'")
    reps = spec.replicates if replicates is None else replicates
    parts = []
    for entry in spec.workloads:
        missing = [r for r in reps if not (root / f"{entry.name}-r{r}-seeds.parquet").is_file()
                   or not (root / f"{entry.name}-r{r}-trace.parquet").is_file()]
        if missing:
            raise DataError(f"--traces={str(directory)!r} lacks workload {entry.name} "
                            f"replicate(s) {missing}: run 'esper-ab record SPACE.yaml --out "
                            f"{directory}' (it skips what is recorded already)")
        seeds = pd.concat([pd.read_parquet(root / f"{entry.name}-r{r}-seeds.parquet")
                           for r in reps], ignore_index=True)
        trace = pd.concat([pd.read_parquet(root / f"{entry.name}-r{r}-trace.parquet")
                           for r in reps], ignore_index=True)
        if len(spec.workloads) > 1:
            prefix = f"{entry.name}:"
            seeds = seeds.assign(seed_id=prefix + seeds["seed_id"])
            trace = trace.assign(seed_id=prefix + trace["seed_id"])
        parts.append(TraceSet(seeds, trace))
    return parts[0] if len(parts) == 1 else TraceSet.concat(parts)


def sweep_evidence(spec: SweepSpec, *, cache_dir: str | Path,
                   progress: Progress | None = None, schedule_timeout_s: float = 60.0,
                   verbose: int = 0) -> Any:
    """The evidence a sweep's trials share (``esper_ab.replay.ReplayEvidence``).

    Recorded traces (``traces: {source: record}``) go the way of ``esper-ab record``: one
    Ray task per episode not cached yet, in parallel, with the space's resources and
    ``progress("record", done, total)``; cached episodes start no task, so a sweep whose
    recording was interrupted resumes it. On the Ray the sweep has joined (or a local one,
    started and stopped here). The episodes are then read back from
    ``<cache_dir>/traces/<sweep>-<spec hash>``. Other sources: ``evidence_for_spec``."""
    from esper_ab.replay import ReplayEvidence, evidence_for_spec

    if spec.traces.source != "record":
        return evidence_for_spec(spec, cache_dir=cache_dir)
    out = Path(cache_dir) / "traces" / f"{spec.name}-{spec.spec_hash()[:12]}"
    record_space(spec, out_dir=out, cache_dir=cache_dir, progress=progress,
                 schedule_timeout_s=schedule_timeout_s, verbose=verbose)
    return ReplayEvidence(load_spec_traces(spec, out), folds=spec.calibration_folds)
