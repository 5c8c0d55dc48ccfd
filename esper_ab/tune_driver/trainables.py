"""What a sweep's Tune trials run, in the worker processes (Ray core only: the one module
that imports ``ray.tune``, ``esper_ab.tune_driver.tune_runner``, hands Tune's report and checkpoint
functions in as ``TuneHooks``). Kept light -- no MLflow, no Optuna storage, no driver-side
code -- since every trial worker is a fresh process that imports it first
(``warm_worker`` is the workers' setup hook).

- ``config_trial``: one config, replicate after replicate (ASHA's time axis), checkpointed
  in the closed loop;
- ``batch_trial`` / ``score_configs``: a batch of replay configs scored in one pass
  (``esper_ab.tune_driver.batches`` plans the batches).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import ray

from esper_ab.errors import EsperABError
from esper_ab.gate import PRESETS
from esper_ab.study.space import params_from_flat
from esper_ab.study.spec import SweepSpec
from esper_ab.trial import (
    BASELINE_LABEL,
    Evidence,
    batch_trial_metrics,
    iter_trial,
    result_from_step,
    write_trial_artifacts,
)

__all__ = ["TuneHooks", "batch_trial", "config_trial", "score_configs", "warm_worker"]


_SETUP_S: list[float] = []   # how long this process's setup hook took (empty: it never ran)


def warm_worker() -> None:
    """Ray worker setup hook of a sweep: what every trial needs, once per worker process."""
    t0 = time.perf_counter()
    import esper_ab.replay  # noqa: F401
    import esper_ab.stats  # noqa: F401

    _SETUP_S.append(time.perf_counter() - t0)


@dataclass(frozen=True)
class TuneHooks:
    report: Callable[..., None]              # ray.tune.report
    get_checkpoint: Callable[[], Any]        # ray.tune.get_checkpoint
    checkpoint_from: Callable[[str], Any]    # ray.tune.Checkpoint.from_directory


def _where(device: str, note: str) -> dict[str, str]:
    return {"device": device, "device_note": note, "gpu_ids": str(ray.get_gpu_ids()),
            "node_id": ray.get_runtime_context().get_node_id()}


def config_trial(config: dict[str, Any], *, spec: SweepSpec, evidence: Evidence, n_boot: int,
                 n_perm: int, hooks: TuneHooks) -> None:
    """One trial. With a scheduler it reports once per replicate (cumulative metrics: the
    scheduler's time axis); without one it reports once, at the end, and ships the
    per-replicate curve in its checkpoint (``steps.json``) -- every report is a round trip
    to the driver. ``trial_compute_s`` counts only the trial's own work (replay + statistics
    + its tables), not the time spent in ``tune.report``. Closed-loop trials checkpoint every
    step (a retry resumes there); replay steps cost milliseconds to redo."""
    params = params_from_flat(config, spec)
    start = 0
    ckpt = hooks.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.loads((Path(d) / "progress.json").read_text())["replicates_evaluated"]
    from esper_ab.study.runtime import device_for_trial  # light workers: only here

    where = _where(*device_for_trial())
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
            (folder / "progress.json").write_text(json.dumps(
                {"replicates_evaluated": step.replicates_evaluated}))
        if not per_step and not step.final:
            curve.append({"step": step.replicates_evaluated, "metrics": dict(step.metrics)})
        if step.final:
            write_trial_artifacts(folder, result_from_step(params, step, evidence), curve)
        compute += time.perf_counter() - t0
        if not (per_step or step.final or folder is not None):
            continue
        metrics = {**step.metrics, "replicates_evaluated": step.replicates_evaluated,
                   "trial_compute_s": compute, **where}
        if folder is None:
            hooks.report(metrics)
        else:
            hooks.report(metrics, checkpoint=hooks.checkpoint_from(str(folder)))
            shutil.rmtree(folder, ignore_errors=True)


_WORKER_EVIDENCE: dict[str, Evidence] = {}   # per worker process: the replay caches stay warm


def batch_trial(config: dict[str, Any], *, spec: SweepSpec, evidence_ref: list,
                hooks: TuneHooks) -> None:
    """A batch of replay configs, scored in one pass and reported once (the rows as JSON).
    The evidence comes by reference and a worker keeps it (with the replay engine's caches,
    warm) for the next batches it runs (``reuse_actors``). A worker's first batch also
    reports how old its process was (``worker_start_s``: process start and imports, before
    any work), how long of that its setup hook's imports took (``worker_setup_s``) and how
    long the evidence took to arrive (``evidence_fetch_s``). ``batch_began_at`` and
    ``batch_ended_at`` (epoch seconds) time its scoring (benchmarks/sweep_overhead.py: a
    slot's wall between its batches)."""
    key, started, fetch, setup = evidence_ref[0].hex(), 0.0, 0.0, 0.0
    if key not in _WORKER_EVIDENCE:   # this worker's first batch: its start-up, the fetch
        started = time.time() - psutil.Process().create_time()
        setup = sum(_SETUP_S)
        t0 = time.perf_counter()
        _WORKER_EVIDENCE.clear()
        _WORKER_EVIDENCE[key] = ray.get(evidence_ref[0])
        fetch = time.perf_counter() - t0
    t0, began = time.perf_counter(), time.time()
    rows = score_configs(spec, _WORKER_EVIDENCE[key], config["batch"])
    hooks.report({"batch_rows": json.dumps(rows, allow_nan=True), "configs": len(rows),
                  "trial_compute_s": time.perf_counter() - t0, "batch_began_at": began,
                  "batch_ended_at": time.time(), "worker_start_s": started,
                  "worker_setup_s": setup, "evidence_fetch_s": fetch,
                  "replicates_evaluated": len(spec.replicates),
                  **_where("cpu", "replay scores on the CPU")})


def score_configs(spec: SweepSpec, evidence: Evidence, items: Sequence[dict[str, Any]],
                  *, base: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Replay every config of a batch over every replicate and score them in one pass.

    ``items``: ``{"number": Optuna trial number, "params": flat params}``. Returns one row per
    item: ``number``, ``flat`` (the params), ``metrics`` (every ``g2.*``) and ``reason`` (why
    a config failed: a combination the strategy refuses); JSON-able."""
    reps = tuple(evidence.replicates)
    if base is None:
        base = evidence.decisions(PRESETS[spec.baseline], label=BASELINE_LABEL, replicates=reps)
    parts, labels, failed = [base], [], {}
    for item in items:
        n = int(item["number"])
        try:
            params = params_from_flat(item["params"], spec)
            parts.append(evidence.decisions(params.gate_config(), label=f"c{n}",
                                            replicates=reps))
            labels.append(f"c{n}")
        except EsperABError as exc:
            failed[n] = f"invalid config: {' '.join(str(exc).split())[:300]}"
    scored = batch_trial_metrics(pd.concat(parts, ignore_index=True), labels=labels) \
        if labels else {}
    return [{"number": int(item["number"]), "flat": dict(item["params"]),
             "metrics": scored.get(f"c{int(item['number'])}", {}),
             "reason": failed.get(int(item["number"]), "")} for item in items]
