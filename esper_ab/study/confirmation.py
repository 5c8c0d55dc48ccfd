"""The confirmation stage: the search's top-k and the baseline judged on held-out replicates.

``confirm_by_replay`` replays the recorded confirmation replicates (exact and cheap; a
calibrating finalist keeps the calibration it was fitted with on the search replicates) and
``judge`` analyzes any confirmation table: the statistics module's paired analysis under the
sweep's selection rule, with Holm over the k confirmed candidates only (the table holds
nothing else), optionally sequential (``esper_ab.stats.sequential_test``). No search step
ever sees a confirmation replicate: both functions refuse an overlap.

Closed-loop confirmation runs: one gate config x one workload x one replicate per Ray task.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from esper_ab.errors import DataError
from esper_ab.gate import PRESETS, GateConfig
from esper_ab.strategies import strategy_class
from esper_ab.trial import BASELINE_LABEL, reference_name

__all__ = ["CLOSED_LOOP_FORMAT", "ConfirmJob", "ConfirmRun", "Confirmation", "check_disjoint",
           "confirm_by_replay", "confirmation_spec", "format_confirmation", "judge",
           "judge_sequentially", "run_confirmations", "sequential_state"]

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


def _readers() -> dict[str, Any]:
    import pyarrow.parquet as pq

    return {"table.parquet": pq.read_table, "run.json": lambda p: json.loads(p.read_text())}


def _cached(job: ConfirmJob, cache_dir: Path) -> tuple[pd.DataFrame, dict] | None:
    from esper_ab.episodes import verified_cache_folder

    for device in ("cpu", "cuda"):
        folder = cache_dir / "closed_loop" / _key(job, device)
        if verified_cache_folder(folder, _readers()):   # checked against its index.json
            return (pd.read_parquet(folder / "table.parquet"),
                    json.loads((folder / "run.json").read_text()))
    return None


def _closed_loop_task(job: ConfirmJob, cache_dir: str, threads: int) -> dict[str, Any]:
    """Ray task: one closed-loop run on the assigned device, written to the cache."""
    import torch

    from esper_ab.episodes.runner import run_closed_loop
    from esper_ab.study.runtime import device_for_trial

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
    try:
        result.table.to_parquet(tmp / "table.parquet", index=False)
        (tmp / "run.json").write_text(json.dumps(meta))
        from esper_ab.episodes import install_cache_folder

        install_cache_folder(tmp, folder, _readers())   # sealed with index.json, then moved
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
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


# -- the held-out confirmation ---------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Confirmation:
    """The authoritative stage of a sweep: ``analysis`` (an ``esper_ab.stats.Analysis``) of
    the k candidates and the baseline on ``replicates``, which no search step saw."""

    analysis: Any
    fidelity: str                       # replay / closed_loop
    search_replicates: tuple[int, ...]
    replicates: tuple[int, ...]         # evaluated (a prefix of ``planned`` when it stopped)
    planned: tuple[int, ...]            # every confirmation replicate of the space
    candidates: tuple[str, ...]
    decisions: pd.DataFrame
    sequential: Any | None = None       # esper_ab.stats.SequentialResult
    preset: str = ""                    # the reference gate's preset (the space's baseline)

    @property
    def verdict(self) -> Any:
        return self.analysis.verdict

    def to_dict(self) -> dict[str, Any]:
        return {"fidelity": self.fidelity, "search_replicates": list(self.search_replicates),
                "replicates": list(self.replicates), "planned": list(self.planned),
                "candidates": list(self.candidates),
                "stopped_early": len(self.replicates) < len(self.planned),
                "sequential": None if self.sequential is None else self.sequential.to_dict()}


def confirmation_spec(spec: Any) -> Any:
    """A copy of ``spec`` whose ``replicates`` are the confirmation replicates (to record or
    load their traces with the spec's own ``traces`` source)."""
    return spec.model_copy(update={"replicates": spec.confirm_replicates})


def check_disjoint(search: Sequence[int], confirm: Sequence[int]) -> None:
    """Refuse a confirmation that shares a replicate with the search."""
    both = sorted(set(int(r) for r in search) & set(int(r) for r in confirm))
    if both:
        raise DataError(f"confirmation replicates {both} were also searched: confirm on "
                        "replicates no search step saw (replicates: {search: ..., confirm: ...})")
    if len(set(confirm)) < 2:
        raise DataError(f"confirmation replicates {list(confirm)}: give at least 2 (paired "
                        "tests over replicates)")


def _check_gates(gates: Mapping[str, GateConfig]) -> None:
    if BASELINE_LABEL not in gates:
        raise DataError(f"the confirmation needs the baseline gate under {BASELINE_LABEL!r}")
    for label, gate in gates.items():
        if strategy_class(gate.strategy).needs_calibration and gate.calibration is None:
            raise DataError(f"candidate {label!r} ({gate.strategy}) has no calibration: confirm "
                            "it with the calibration fitted on the search replicates")


def judge(spec: Any, table: pd.DataFrame, *, fidelity: str, candidates: Sequence[str],
          n_boot: int = 1000, n_perm: int = 2000, seed: int = 0) -> Confirmation:
    """The confirmation verdict of a decisions table on confirmation replicates (the
    baseline's rows labelled ``baseline``, one label per candidate)."""
    from esper_ab.stats import analyze

    reps = tuple(sorted(int(r) for r in pd.unique(table["replicate"])))
    check_disjoint(spec.replicates, reps)
    analysis = analyze(table, baseline=BASELINE_LABEL, alpha=spec.selection.alpha,
                       rule=spec.selection.rule(), n_boot=n_boot, n_perm=n_perm, seed=seed)
    return Confirmation(analysis, fidelity, tuple(spec.replicates), reps,
                        tuple(spec.confirm_replicates), tuple(candidates), table,
                        preset=str(getattr(spec, "baseline", "") or ""))


def sequential_state(spec: Any, table: pd.DataFrame, *, candidates: Sequence[str],
                     order: Sequence[int]) -> Any:
    """The always-valid sequential test (``esper_ab.stats.sequential_test``) of the
    candidates over the confirmation replicates ``order`` seen so far."""
    from esper_ab.stats import replicate_differences, sequential_test

    rule = spec.selection.rule()
    diffs = replicate_differences(table, baseline=BASELINE_LABEL, candidates=candidates,
                                  objective=rule.objective, replicates=order)
    return sequential_test(diffs, replicates=order, alpha=spec.selection.alpha,
                           margin=rule.margin, min_replicates=spec.confirm.min_replicates)


def judge_sequentially(spec: Any, table: pd.DataFrame, *, fidelity: str,
                       candidates: Sequence[str], order: Sequence[int], n_boot: int = 1000,
                       n_perm: int = 2000, seed: int = 0) -> Confirmation:
    """``judge`` with sequential stopping: the replicates up to the first look at which every
    candidate is settled, and the gain's p-values anytime-valid (1 / the e-process' largest
    wealth, Holm over the candidates), so stopping on the data keeps the error rate."""
    from esper_ab.stats import holm_anytime, select_winner

    seq = sequential_state(spec, table, candidates=candidates, order=order)
    used = list(order)[:seq.n_used]
    conf = judge(spec, table[table["replicate"].isin(used)], fidelity=fidelity,
                 candidates=candidates, n_boot=n_boot, n_perm=n_perm, seed=seed)
    name = f"{spec.selection.objective}_vs_baseline"
    adjusted = holm_anytime(seq)
    tests = tuple(
        replace(t, pvalue=seq.pvalue(t.strategy), pvalue_adjusted=adjusted[t.strategy],
                adjustment="holm", method=f"{t.method}; p anytime-valid (betting e-process, "
                                          "sequential confirmation)")
        if t.name == name and t.blueprint is None and t.strategy in adjusted else t
        for t in conf.analysis.tests)
    analysis = replace(conf.analysis, tests=tests)
    analysis = replace(analysis, verdict=select_winner(analysis))
    return replace(conf, analysis=analysis, sequential=seq, planned=tuple(
        spec.confirm_replicates))


def confirm_by_replay(spec: Any, evidence: Any, gates: Mapping[str, GateConfig], *,
                      n_boot: int = 1000, n_perm: int = 2000, seed: int = 0) -> Confirmation:
    """Replay ``gates`` (the baseline under ``baseline``, each candidate under its label) on
    the space's confirmation replicates and judge them."""
    reps = spec.confirm_replicates
    check_disjoint(spec.replicates, reps)
    missing = sorted(set(reps) - set(int(r) for r in evidence.replicates))
    if missing:
        raise DataError(f"the confirmation evidence lacks replicates {missing}: record them "
                        "('esper-ab record SPACE.yaml' records search and confirmation)")
    gates = {BASELINE_LABEL: PRESETS[spec.baseline], **{k: v for k, v in gates.items()
                                                      if k != BASELINE_LABEL}}
    _check_gates(gates)
    table = pd.concat([evidence.decisions(g, label=label, replicates=reps)
                       for label, g in gates.items()], ignore_index=True)
    if spec.confirm.sequential:
        return judge_sequentially(spec, table, fidelity="replay",
                                  candidates=[k for k in gates if k != BASELINE_LABEL],
                                  order=reps, n_boot=n_boot, n_perm=n_perm, seed=seed)
    return judge(spec, table, fidelity="replay",
                 candidates=[k for k in gates if k != BASELINE_LABEL], n_boot=n_boot,
                 n_perm=n_perm, seed=seed)


def _per_blueprint(conf: Confirmation, label: str) -> pd.DataFrame:
    g = conf.analysis.metrics.by_group
    rows = g.loc[label, ["n", "pass_rate", "tpr", "fpr"]].copy()
    d = conf.decisions[conf.decisions["strategy"] == label]
    rows["value_pp"] = d.groupby("blueprint")["value"].mean()
    rows["valuable"] = d.groupby("blueprint")["valuable"].sum().astype(int)
    return rows[["n", "valuable", "value_pp", "pass_rate", "tpr", "fpr"]]


def format_confirmation(conf: Confirmation, *, width: int | None = None) -> str:
    """What the CLI prints: the confirmed verdict first, then the reference gate's bias per
    blueprint (value, pass rate, TPR/FPR) beside the winner's (or the best candidate's), as
    an aligned table (``esper_ab.console``: counts as integers, rates rounded, names whole)."""
    from esper_ab.console import render_table

    v = conf.verdict
    stop = ""
    if len(conf.replicates) < len(conf.planned):
        stop = (f"; stopped early after {len(conf.replicates)} of {len(conf.planned)} "
                "(always-valid sequential test)")
    lines = [f"Confirmed verdict ({conf.fidelity.replace('_', ' ')} on held-out replicates "
             f"{list(conf.replicates)}{stop}; the search saw {list(conf.search_replicates)}):",
             *_wrapped(v.summary_lines(), width)]
    overall = conf.analysis.metrics.overall
    focus = v.winner or max(conf.candidates, key=lambda c: float(
        overall.loc[c, conf.analysis.rule.objective]))
    base, cand = _per_blueprint(conf, BASELINE_LABEL), _per_blueprint(conf, focus)
    arm = "win" if v.winner else "best"
    ref = reference_name(conf.preset) if conf.preset else BASELINE_LABEL
    cols = ["blueprint", "seeds", "valuable", "value pp", "pass ref", f"pass {arm}",
            "TPR ref", f"TPR {arm}", "FPR ref", f"FPR {arm}"]
    rows = [[bp, _count(b["n"]), _count(b["valuable"]), b["value_pp"],
             *(x for m in ("pass_rate", "tpr", "fpr")
               for x in (b[m], cand[m].get(bp, float("nan"))))]
            for bp, b in base.iterrows()]
    lines += ["", render_table(
        cols, rows, numeric=cols[1:], keep=["blueprint"], width=width,
        title=f"Per blueprint on the confirmation replicates: the {ref} gate (ref) vs "
              f"{focus} ({arm}); value pp = mean gain over the placebo, in points")]
    return "\n".join(lines)


def _wrapped(lines: Sequence[str], width: int | None) -> list[str]:
    """The verdict's lines, indented, wrapped between words at the tables' width."""
    import textwrap

    from esper_ab.console import table_width

    out = []
    for line in (x for x in lines if x):
        lead = "  " + " " * (len(line) - len(line.lstrip()))
        out += textwrap.wrap(line.strip(), width=width or table_width(), initial_indent=lead,
                             subsequent_indent=lead + "    ", break_long_words=False,
                             break_on_hyphens=False)
    return out


def _count(v: Any) -> int | None:
    return None if pd.isna(v) else int(v)
