"""``esper_ab.stats.analyze`` on a large decisions table: CPU seconds and peak memory.

Issue 25 item 7: 1e6 rows within 60 s and 2 GB on one core. The table is simulated
(4 strategies x 8 blueprints; replicates and seeds per cell sized to the row count), then
analyzed with the defaults (n_boot 1000, n_perm 2000). One BLAS / OpenMP thread.

    python benchmarks/analyze_scale.py [--rows 1000000] [--replicates 500] [--profile]

Reports the CPU seconds of ``analyze`` alone (``time.process_time``, fair on a loaded
machine), its wall seconds, and the process's peak resident memory (``ru_maxrss``, table
generation included).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

from esper_ab.stats import SimulationDesign, StrategySpec, analyze, simulate_decisions  # noqa: E402

BPS = tuple(f"bp{i}" for i in range(8))


def table(rows: int, replicates: int):
    seeds = max(1, round(rows / (4 * len(BPS) * replicates)))
    design = SimulationDesign(blueprints=BPS, n_replicates=replicates, seeds_per_cell=seeds,
                              strategies=(
        StrategySpec("baseline", (0.0, 0.02, 0.58, 0.98, 1.0, 1.0, 1.0, 1.0), signal=0.3),
        StrategySpec("fair", tpr=(0.8,) * 8, fpr=(0.2,) * 8),
        StrategySpec("unfair", tpr=(0.95,) * 4 + (0.6,) * 4, fpr=(0.1,) * 8),
        StrategySpec("copy", (0.0, 0.02, 0.58, 0.98, 1.0, 1.0, 1.0, 1.0), signal=0.3)))
    return simulate_decisions(design, seed=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--replicates", type=int, default=500)
    p.add_argument("--profile", action="store_true", help="print the 25 costliest calls")
    args = p.parse_args()
    df = table(args.rows, args.replicates)
    print(f"table: {len(df)} rows, {df.replicate.nunique()} replicates, "
          f"{df.strategy.nunique()} strategies, {df.blueprint.nunique()} blueprints")
    prof = cProfile.Profile() if args.profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    a = analyze(df)
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"analyze: {cpu:.1f} CPU s, {wall:.1f} wall s, peak RSS {peak_mb:.0f} MB")
    print(a.verdict.headline)
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
