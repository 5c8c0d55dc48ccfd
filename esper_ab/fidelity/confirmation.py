"""Closed-loop confirmation runs: one gate config x one workload x one replicate per Ray task.

A run is ``esper_ab.episodes.runner.run_closed_loop``: every seed of the workload alone from the same
pretrained host, the gate in the loop deciding when it blends, then a fixed horizon; its
table holds admitted, blend_epoch and the final held-out accuracy against the no-seed
control. A task runs on CUDA when Ray gave it a GPU that torch sees, on the CPU otherwise.
Results are cached on disk (content hash of the episode config, replicate, gate and device
type), so an interrupted confirmation resumes and a repeated one costs nothing. Ray core
only (``ray.remote``): the caller starts or joins Ray.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from esper_ab.gate import GateConfig

__all__ = ["CLOSED_LOOP_FORMAT", "ConfirmJob", "ConfirmRun", "run_confirmations"]

CLOSED_LOOP_FORMAT = "closed-loop-v1"   # bump when the closed-loop procedure changes
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ConfirmJob:
    """One closed-loop run: config ``label`` (as in the analysis) on one replicate."""

    label: str
    gate: GateConfig
    workload: str
    replicate: int
    config: Any                 # esper_ab.episodes.runner.EpisodeConfig
    seed_prefix: str = ""       # "<workload>:" when a sweep has several workloads


@dataclass(frozen=True, eq=False)
class ConfirmRun:
    job: ConfirmJob
    table: pd.DataFrame         # the closed-loop table + label; seed ids as in the traces
    device: str
    compute_s: float            # CPU seconds of the run's process (when it ran)
    wall_s: float
    cached: bool                # loaded from the cache by this call


def _key(job: ConfirmJob, device: str) -> str:
    from esper_ab.episodes.workloads import config_hash

    return config_hash(job.config, job.replicate, job.gate.to_dict(), device,
                       CLOSED_LOOP_FORMAT)


def _cached(job: ConfirmJob, cache_dir: Path) -> tuple[pd.DataFrame, dict] | None:
    for device in ("cpu", "cuda"):
        folder = cache_dir / "closed_loop" / _key(job, device)
        if (folder / "table.parquet").is_file() and (folder / "run.json").is_file():
            return (pd.read_parquet(folder / "table.parquet"),
                    json.loads((folder / "run.json").read_text()))
    return None


def _closed_loop_task(job: ConfirmJob, cache_dir: str, threads: int) -> dict[str, Any]:
    """Ray task: one closed-loop run on the assigned device, written to the cache."""
    import torch

    from esper_ab.sweeps.runtime import device_for_trial
    from esper_ab.episodes.runner import run_closed_loop

    torch.set_num_threads(max(1, threads))
    device, note = device_for_trial()
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_closed_loop(job.config, replicate=job.replicate, gate=job.gate,
                             cache_dir=cache_dir, device=device)
    meta = {"device": device, "device_note": note, "wall_s": time.perf_counter() - t0,
            "compute_s": time.process_time() - c0}
    folder = Path(cache_dir) / "closed_loop" / _key(job, device)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    result.table.to_parquet(tmp / "table.parquet", index=False)
    (tmp / "run.json").write_text(json.dumps(meta))
    if folder.exists():   # another task wrote the same result first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return {"table": result.table, **meta}


def _finish(job: ConfirmJob, table: pd.DataFrame, meta: dict, cached: bool) -> ConfirmRun:
    table = table.assign(label=job.label)
    if job.seed_prefix:
        table = table.assign(seed_id=job.seed_prefix + table["seed_id"])
    return ConfirmRun(job, table, str(meta.get("device", "cpu")),
                      float(meta.get("compute_s", 0.0)), float(meta.get("wall_s", 0.0)), cached)


def run_confirmations(jobs: Sequence[ConfirmJob], *, cache_dir: str | Path, cpu: float = 1.0,
                      gpu: float = 0.0, progress: Progress | None = None) -> list[ConfirmRun]:
    """Run every job not in the cache as a Ray task (``cpu``/``gpu`` per task); Ray must be
    started or joined by the caller. Returns the runs in the order of ``jobs``."""
    import ray

    cache = Path(cache_dir).resolve()
    runs: dict[int, ConfirmRun] = {}
    todo = []
    for i, job in enumerate(jobs):
        hit = _cached(job, cache)
        if hit is None:
            todo.append(i)
        else:
            runs[i] = _finish(job, hit[0], hit[1], cached=True)
    if progress is not None:
        progress("closed-loop", len(runs), len(jobs))
    if todo:
        task = ray.remote(_closed_loop_task).options(num_cpus=cpu, num_gpus=gpu,
                                                     max_retries=1)
        refs = {task.remote(jobs[i], str(cache), max(1, int(cpu))): i for i in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            out = ray.get(ready[0])
            i = refs[ready[0]]
            runs[i] = _finish(jobs[i], out.pop("table"), out, cached=False)
            if progress is not None:
                progress("closed-loop", len(runs), len(jobs))
    return [runs[i] for i in range(len(jobs))]
