"""Sweep overhead of a Ray Tune sweep at replay fidelity, the parts of its fixed start cost,
and its search stage against the in-process replay search on the same configs.

The flagship's space (``benchmarks/_flagship.py``: its strategies, gate search, sampler and 8
search replicates; synthetic traces of a recorded episode's shape unless ``--traces``) runs as
a batched Ray Tune sweep (``esper_ab.tune_driver.batches``: a Tune trial scores a batch of
configs):

    overhead = wall(Tuner.fit) / (sum of trial compute / concurrency)

A trial's compute is its own work (replay + batched scoring of its configs); the rest -- Ray
scheduling, the trial workers' start (process + imports), Optuna asks and tells, reports --
is overhead. The fixed start cost is printed in parts: Ray connect, MLflow run + Optuna
storage, Tuner construction, Tuner.fit to the first trial result, each worker's process age
when its first batch began (and its setup hook's imports), the evidence fetch, the first
batch's Optuna asks, and the imports of a trial worker timed in a fresh process. Then, per
slot (a trial worker process), the wall it did not spend scoring: before its first batch
(the worker start), between its batches (the driver's tells and asks of its next batch, a
wait for a batch that ask must see, Tune staging the trial) and after its last, from each
batch's ``batch_began_at`` / ``batch_ended_at``. Then the same configs (enqueued in a fresh
study) run through the in-process
search (``esper_ab.study.replay_search.search_replay``):

    search stage ratio = wall(Tuner.fit) / wall(in-process search)

``--min-compute S`` sizes the search so that the sum of trial compute is at least S seconds:
the synthetic traces get more seeds per blueprint (each config replays more seeds; the
configs, replicates and batches stay as they are; give more ``--configs`` to keep the traces,
and so every worker's memory, smaller), chosen from a pilot that scores 32 random configs in
process (CPU time) and scaled with a 1.25 margin. The output says what was scaled and whether
the sum reached S. The held-out confirmation and the in-process comparison are left out
there: they would hold the scaled traces (4.5x larger for the 36 confirmation replicates) in
the driver as well, and neither is part of Tuner.fit.

    python benchmarks/sweep_overhead.py [--configs 200] [--concurrency 2] [--traces DIR]
        [--batch-size N] [--min-compute SECONDS]

Targets (issue 15, issue 24 item 6): overhead <= 1.10 (on >= 60 s of trial compute);
search stage within 2x of the in-process search.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from _flagship import flagship_space, start_sweep_ray, worker_starts  # noqa: E402

PILOT_CONFIGS = 32
MARGIN = 1.25
# A trial worker's imports, step by step, in a fresh interpreter (what a Tune trial actor's
# process imports before its first batch: Ray, Tune's function trainable, the trial module,
# and the setup hook's replay + statistics stack).
IMPORTS = """
import json, time
out, t = {}, time.perf_counter()
for name, mods in [("ray", ["ray"]), ("ray.tune", ["ray.tune"]),
                   ("trainables", ["esper_ab.tune_driver.trainables"]),
                   ("replay+stats (setup hook)", ["esper_ab.replay", "esper_ab.stats"])]:
    for m in mods:
        __import__(m)
    now = time.perf_counter(); out[name] = now - t; t = now
print(json.dumps(out))
"""


def build(args: argparse.Namespace, seeds: int):
    from esper_ab.study.spec import parse_sweep_spec

    return parse_sweep_spec(flagship_space(configs=args.configs, concurrency=args.concurrency,
                                           traces_dir=args.traces, name="sweep_overhead",
                                           seeds_per_blueprint=seeds,
                                           confirm=args.min_compute is None), source="benchmark")


def pilot_cpu_per_config(spec, evidence, n: int = PILOT_CONFIGS) -> float:
    """CPU seconds per config of the batched scoring a trial runs, on ``n`` random configs
    of the space (the replay caches warmed by a first pass over a few)."""
    import optuna

    from esper_ab.study.space import define_by_run
    from esper_ab.study.studies import optuna_directions
    from esper_ab.tune_driver.trainables import score_configs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1),
                                directions=optuna_directions(spec))
    space, items = define_by_run(spec), []
    for i in range(n):
        t = study.ask()
        fixed = space(t)
        items.append({"number": i, "params": {**t.params, **fixed}})
    score_configs(spec, evidence, items[:4])
    t0 = time.process_time()
    score_configs(spec, evidence, items)
    return (time.process_time() - t0) / n


def size_for(args: argparse.Namespace, tmp: str) -> tuple[int, str]:
    """Seeds per blueprint whose predicted sum of trial compute is >= MARGIN x the target."""
    from esper_ab.replay import evidence_for_spec

    seeds, target, note = 1, args.min_compute * MARGIN, ""
    for _ in range(4):
        spec = build(args, seeds)
        per = pilot_cpu_per_config(spec, evidence_for_spec(spec, cache_dir=tmp))
        predicted = per * args.configs
        note = (f"seeds per blueprint 1 -> {seeds} (pilot: {per * 1e3:.1f} CPU-ms per config "
                f"at {seeds} seed(s), predicted sum {predicted:.1f} s for {args.configs} "
                f"configs; configs, replicates and batches unchanged)")
        if predicted >= args.min_compute * 1.1:
            return seeds, note
        seeds = max(seeds + 1, math.ceil(seeds * target / max(predicted, 1e-9)))
    return seeds, note


def worker_imports() -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True,
                         env=env, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_batches(sweep_dir: Path) -> list[dict]:
    """The results of the batches that were their worker's first (worker_start_s > 0)."""
    rows = []
    for path in Path(sweep_dir, "tune").rglob("result.json"):
        for line in path.read_text().splitlines():
            if line.strip() and (r := json.loads(line)).get("worker_start_s", 0) > 0:
                rows.append(r)
    return rows


def batch_results(sweep_dir: Path) -> list[dict]:
    """Every batch trial's result (its last result.json line), in the order they began."""
    out = []
    for path in Path(sweep_dir, "tune").rglob("result.json"):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if lines and "batch_began_at" in (r := json.loads(lines[-1])):
            out.append(r)
    return sorted(out, key=lambda r: r["batch_began_at"])


def slot_times(results: list[dict], fit_at: float, fit_wall: float) -> list[dict]:
    """Per trial worker process (a slot; Tune's ``pid`` in each result), in seconds of wall:
    before its first batch began (from Tuner.fit: the worker start), between its batches
    (the driver's rows, tells and asks of its next batch, any wait for a batch the next ask
    must see, Tune staging the trial) and after its last batch until fit's end; the sum
    over slots plus the batches' scoring is concurrency x Tuner.fit."""
    by_pid: dict[int, list[dict]] = {}
    for r in results:
        by_pid.setdefault(r.get("pid", 0), []).append(r)
    out = []
    for rs in by_pid.values():
        rs.sort(key=lambda r: r["batch_began_at"])
        out.append({"batches": len(rs), "start_s": rs[0]["batch_began_at"] - fit_at,
                    "between_s": [b["batch_began_at"] - a["batch_ended_at"]
                                  for a, b in zip(rs, rs[1:], strict=False)],
                    "tail_s": fit_at + fit_wall - rs[-1]["batch_ended_at"],
                    "scoring_s": sum(r["batch_ended_at"] - r["batch_began_at"] for r in rs)})
    return out


def inprocess(spec, evidence, rows: list[dict], tmp: Path):
    """The same configs through the in-process search (enqueued: no sampling needed)."""
    import optuna

    from esper_ab.study.replay_search import replay_study_name, search_replay
    from esper_ab.study.studies import REPLAY_JOURNAL, optuna_directions, optuna_storage

    folder = tmp / "inprocess"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=replay_study_name(spec),
                                storage=optuna_storage(spec, folder, journal=REPLAY_JOURNAL,
                                                       study_name=replay_study_name(spec)),
                                directions=optuna_directions(spec))
    for row in rows:
        study.enqueue_trial(row["flat"])
    return search_replay(spec, evidence, folder=folder, num_samples=len(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--traces", default=None, help="recorded traces (esper-ab record --out)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: auto")
    ap.add_argument("--min-compute", type=float, default=None, metavar="SECONDS",
                    help="size the search to at least this sum of trial compute (synthetic "
                         "traces: more seeds per blueprint)")
    args = ap.parse_args()
    if args.min_compute is not None and args.traces:
        print(f"--min-compute={args.min_compute} scales synthetic traces: drop --traces",
              file=sys.stderr)
        sys.exit(2)
    load_before = os.getloadavg()

    from esper_ab.replay import evidence_for_spec
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        seeds, scaled = size_for(args, tmp) if args.min_compute else (1, "")
        spec = build(args, seeds)
        evidence = evidence_for_spec(spec, cache_dir=tmp)
        imports = worker_imports()
        t0 = time.perf_counter()
        start_sweep_ray(args.concurrency)
        connect = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run_sweep(spec, evidence=evidence, options=SweepOptions(
            tracking_uri=f"sqlite:///{tmp}/mlflow.db", num_cpus=args.concurrency,
            n_boot=200, n_perm=200, batch_size=args.batch_size))
        total = time.perf_counter() - t0
        starts = worker_starts(out.sweep_dir)
        firsts = first_batches(out.sweep_dir)
        batches = len(list(Path(out.sweep_dir, "tune").rglob("result.json")))
        rows = [json.loads(line) for line in
                (out.sweep_dir / "batches.jsonl").read_text().splitlines() if line.strip()]
        results = batch_results(out.sweep_dir)
        search = None if args.min_compute else inprocess(spec, evidence, rows, Path(tmp))
    ideal = out.trial_compute_s / args.concurrency
    first = max(starts) if starts else 0.0
    ph = out.phases
    print(f"flagship space on Ray Tune, replay fidelity: {len(rows)} configs x "
          f"{len(spec.replicates)} replicates, concurrency {args.concurrency}, "
          f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    if scaled:
        met = "met" if out.trial_compute_s >= args.min_compute else \
            "NOT MET: rerun with a larger --min-compute"
        print(f"  scaled for >= {args.min_compute:g} s of trial compute: {scaled}; "
              f"target {met}")
    churn = " (Tune did not keep an idle actor between batches)" \
        if len(starts) > args.concurrency else ""
    print(f"  batched trials: {batches} batches, asked in a pipeline {args.concurrency} deep; "
          f"{len(starts)} worker process(es) started{churn}; sum of trial "
          f"compute {out.trial_compute_s:.2f} s")
    print("  fixed start cost, in parts:")
    print(f"    Ray connect (embedded, prestarted workers)  {connect:6.2f} s  (before run_sweep)")
    print(f"    run_sweep to Tuner.fit: MLflow run + Optuna storage "
          f"{ph.get('tracking_storage_s', 0):.2f} s, schedulable check + Tuner construction "
          f"{ph.get('schedulable_tuner_s', 0):.2f} s")
    print(f"    Tuner.fit -> first trial result            {ph.get('first_result_s', 0):6.2f} s")
    print(f"    first batch's Optuna asks                  {ph.get('first_ask_s', 0):6.2f} s")
    for r in sorted(firsts, key=lambda r: r["worker_start_s"]):
        print(f"    a worker's process age at its first batch  {r['worker_start_s']:6.2f} s "
              f"(setup hook imports {r.get('worker_setup_s', 0):.2f} s); evidence fetch "
              f"{r.get('evidence_fetch_s', 0):.2f} s")
    print("    a trial worker's imports in a fresh process: " +
          ", ".join(f"{k} {v:.2f} s" for k, v in imports.items()))
    fit_at = ph.get("fit_started_at", 0.0)
    slots = slot_times(results, fit_at, out.fit_wall_s)
    print("  per slot (a trial worker process), seconds of wall not spent scoring a batch:")
    for i, sl in enumerate(slots):
        print(f"    slot {i + 1}: {sl['batches']} batches, scoring {sl['scoring_s']:6.2f} s; "
              f"before the first {sl['start_s']:5.2f} s, between batches "
              f"{sum(sl['between_s']):5.2f} s (" + " / ".join(
                  f"{g:.2f}" for g in sl["between_s"]) + f"), after the last {sl['tail_s']:5.2f} s")
    if slots:
        between = sum(sum(sl["between_s"]) for sl in slots)
        print(f"    between batches: {between:.2f} slot-s in all (= {between / args.concurrency:.2f}"
              f" s of wall at concurrency {args.concurrency}); the driver's asks "
              f"{ph.get('asks_s', 0):.2f} s in all (the first batch's "
              f"{ph.get('first_ask_s', 0):.2f} s before any slot began), rows + tells "
              f"{ph.get('tells_s', 0):.2f} s; after the last batches "
              f"{sum(sl['tail_s'] for sl in slots):.2f} slot-s")
    print(f"  Tuner.fit wall          {out.fit_wall_s:8.2f} s (of which the slowest worker "
          f"start {first:.2f} s)")
    print(f"  overhead = wall / (compute / concurrency) = {out.fit_wall_s / ideal:.2f} "
          "(target <= 1.10)")
    print(f"  without the one-off worker start: {(out.fit_wall_s - first) / ideal:.2f}")
    if search is None:
        print("  (no held-out confirmation, no in-process comparison at --min-compute)")
    else:
        print(f"  in-process search of the same configs: {search.wall_s:.2f} s "
              f"({search.n_configs} configs, {search.configs_per_s:.0f}/s)")
        print(f"  search stage ratio = Tuner.fit / in-process = "
              f"{out.fit_wall_s / search.wall_s:.2f} (target <= 2); without the worker start: "
              f"{(out.fit_wall_s - first) / search.wall_s:.2f}")
    print(f"  end to end (traces ready; Tune, finalists, analysis, report): {total:.1f} s")


if __name__ == "__main__":
    main()
