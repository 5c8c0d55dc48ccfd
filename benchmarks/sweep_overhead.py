"""Sweep overhead: wall time of the Tune run over the ideal time of its trials.

    overhead = wall(Tuner.fit) / (sum of trial compute / concurrency)

A trial's compute is the time it spends in its own work (replay + statistics for every
replicate, writing its final tables); the rest -- Ray scheduling, worker start, Optuna,
reporting, checkpoints, the driver's MLflow logging -- is overhead. Short trials make the
ratio a stress test of the machinery. Traces are synthetic (no training), so the trials are
deterministic and cheap; ``--replicates`` sets how long each trial is.

    python benchmarks/sweep_overhead.py [--trials 16] [--concurrency 2] [--replicates 8]

Prints the figure (target <= 1.15) and the end-to-end wall (Ray start, traces, analysis).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--seeds-per-blueprint", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from esper_ab.sweeps.spec import parse_sweep_spec
    from esper_ab.sweeps.tune_runner import SweepOptions, run_sweep

    spec = parse_sweep_spec({
        "name": "sweep_overhead", "workloads": [{"name": "synthetic-cnn"}],
        "replicates": args.replicates,
        "traces": {"source": "synthetic",
                   "synthetic": {"seeds_per_blueprint": args.seeds_per_blueprint}},
        "strategies": [{"name": "exponent"}, {"name": "baseline"}, {"name": "mean_abs"}],
        "sampler": {"kind": "random", "seed": 0}, "num_samples": args.trials,
        "max_concurrent": args.concurrency, "resources": {"cpu": 1},
        "selection": {"top_k": 3}}, source="benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = run_sweep(spec, options=SweepOptions(
            tracking_uri=f"sqlite:///{tmp}/mlflow.db", num_cpus=args.concurrency,
            n_boot=200, n_perm=200))
        total = time.perf_counter() - t0
    ideal = out.trial_compute_s / args.concurrency
    print(f"trials {args.trials}, concurrency {args.concurrency}, replicates {args.replicates}")
    print(f"sum of trial compute   {out.trial_compute_s:8.2f} s "
          f"(mean {out.trial_compute_s / args.trials:.2f} s per trial)")
    print(f"Tuner.fit wall         {out.fit_wall_s:8.2f} s")
    print(f"overhead = wall / (compute / concurrency) = {out.fit_wall_s / ideal:.3f} "
          "(target <= 1.15)")
    print(f"end to end (Ray start, traces, fit, cross-trial analysis, report): {total:.1f} s")


if __name__ == "__main__":
    main()
