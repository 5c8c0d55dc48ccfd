"""Sweep overhead of a Ray Tune sweep at replay fidelity, and its search stage against the
in-process replay search on the same configs.

The flagship's space (``benchmarks/_flagship.py``: its strategies, gate search, sampler and 20
replicates; synthetic traces of a recorded episode's shape unless ``--traces``) runs as a
batched Ray Tune sweep (``esper_ab.tune_driver.batches``: a Tune trial scores a batch of configs):

    overhead = wall(Tuner.fit) / (sum of trial compute / concurrency)

A trial's compute is its own work (replay + batched scoring of its configs); the rest -- Ray
scheduling, the trial workers' start (process + imports), Optuna asks and tells, reports --
is overhead. The worker start is also shown on its own (each worker's process age when its
first batch began) with the figure it leaves. Then the same configs (enqueued in a fresh
study) run through the in-process search (``esper_ab.study.replay_search.search_replay``):

    search stage ratio = wall(Tuner.fit) / wall(in-process search)

    python benchmarks/sweep_overhead.py [--configs 200] [--concurrency 2] [--traces DIR]
        [--batch-size N]

Targets (issue 15): overhead <= 1.10; search stage within 2x of the in-process search.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from _flagship import flagship_space, start_sweep_ray, worker_starts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--traces", default=None, help="recorded traces (esper-ab record --out)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: auto")
    args = ap.parse_args()

    import optuna

    from esper_ab.replay import evidence_for_spec
    from esper_ab.study.replay_search import search_replay
    from esper_ab.study.spec import parse_sweep_spec
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    spec = parse_sweep_spec(flagship_space(configs=args.configs, concurrency=args.concurrency,
                                           traces_dir=args.traces, name="sweep_overhead"),
                            source="benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        evidence = evidence_for_spec(spec, cache_dir=tmp)
        start_sweep_ray(args.concurrency)
        t0 = time.perf_counter()
        out = run_sweep(spec, evidence=evidence, options=SweepOptions(
            tracking_uri=f"sqlite:///{tmp}/mlflow.db", num_cpus=args.concurrency,
            n_boot=200, n_perm=200, batch_size=args.batch_size))
        total = time.perf_counter() - t0
        starts = worker_starts(out.sweep_dir)
        rows = [json.loads(line) for line in
                (out.sweep_dir / "batches.jsonl").read_text().splitlines() if line.strip()]
        # The same configs through the in-process search (enqueued: no sampling needed).
        folder = Path(tmp) / "inprocess"
        from esper_ab.study.replay_search import replay_study_name
        from esper_ab.study.studies import REPLAY_JOURNAL, optuna_directions, optuna_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name=replay_study_name(spec),
                                    storage=optuna_storage(spec, folder, journal=REPLAY_JOURNAL,
                                                           study_name=replay_study_name(spec)),
                                    directions=optuna_directions(spec))
        for row in rows:
            study.enqueue_trial(row["flat"])
        search = search_replay(spec, evidence, folder=folder, num_samples=len(rows))
    ideal = out.trial_compute_s / args.concurrency
    first = max(starts) if starts else 0.0
    print(f"flagship space on Ray Tune, replay fidelity: {len(rows)} configs x "
          f"{len(spec.replicates)} replicates, concurrency {args.concurrency}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  batched trials: {len(starts)} worker(s) started; sum of trial compute "
          f"{out.trial_compute_s:.2f} s")
    print(f"  Tuner.fit wall          {out.fit_wall_s:8.2f} s (of which the slowest worker "
          f"start {first:.2f} s)")
    print(f"  overhead = wall / (compute / concurrency) = {out.fit_wall_s / ideal:.2f} "
          "(target <= 1.10)")
    print(f"  without the one-off worker start: {(out.fit_wall_s - first) / ideal:.2f}")
    print(f"  in-process search of the same configs: {search.wall_s:.2f} s "
          f"({search.n_configs} configs, {search.configs_per_s:.0f}/s)")
    print(f"  search stage ratio = Tuner.fit / in-process = {out.fit_wall_s / search.wall_s:.2f} "
          f"(target <= 2); without the worker start: "
          f"{(out.fit_wall_s - first) / search.wall_s:.2f}")
    print(f"  end to end (traces ready; Tune, finalists, analysis, report): {total:.1f} s")


if __name__ == "__main__":
    main()
