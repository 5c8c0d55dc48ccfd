"""Time to a significant verdict: a naive closed-loop grid vs the multi-fidelity sweep.

Both answer the same question on the same space -- does some gate config of the grid beat
the baseline gate in the closed loop, significantly? -- with the same verdict rule: the
``top_k`` configs (the naive grid ranks them by their closed-loop result, multi-fidelity by
replay) go with the baseline into ``esper_ab.stats.analyze`` on closed-loop decisions
(realized gain over the no-seed control; sign-flip test over replicates, Holm across the
``top_k``). Replicates are added one at a time until the verdict is significant.

- **multi-fidelity** (run for real): per new replicate, record its episode (a Ray task),
  replay-search the whole grid on the replicates so far (in process), and run the
  finalists + baseline in the closed loop (Ray tasks) on every replicate so far (a
  (config, replicate) run is cached, never paid twice).
- **naive grid**: every grid config + the baseline in the closed loop on every replicate.
  Default: its cost is *counted*, not run: (G + 1) x R_floor closed-loop runs at the mean
  measured CPU-seconds per run (this run's confirmation runs plus ``--sample`` grid configs
  run on replicate 0). R_floor is the fewest replicates at which *any* data can be
  significant: the exact sign-flip test's smallest two-sided p is 2 / 2^R, Holm multiplies
  it by top_k. The replicate count is a lower bound; the per-run cost is an estimate (one
  ``--full`` run on 2 busy cores measured 1.44 CPU-s/run where the counted mode estimated
  1.51, i.e. ratio 19.8 for real vs 21.3 counted).
  ``--full`` runs the naive grid for real, replicate by replicate, until its verdict is
  significant (about (G + 1) x R x 1.5 CPU-s: ~15 min on 2 cores for the default grid).

Compute = CPU-seconds (``time.process_time`` of the Ray worker running each episode or
closed-loop run; the in-process replay search's own CPU time), each unit measured once in
this run. The default space is tiny (synthetic-cnn at size "tiny", one slot, four
blueprints + placebo, 92 grid configs); the default run takes a few minutes on 2 cores.

    python benchmarks/time_to_verdict.py [--max-replicates 10] [--top-k 2] [--full]
        [--workers 2] [--sample 6] [--cache DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import ray

from esper_ab.sweeps.runtime import connect_ray
from esper_ab.fidelity.confirmation import ConfirmJob, run_confirmations
from esper_ab.replay import ReplayEvidence
from esper_ab.fidelity.agreement import closed_loop_decisions
from esper_ab.gate import PRESETS
from esper_ab.fidelity.recording import load_spec_traces, record_space
from esper_ab.fidelity.search import rank_trials, search_replay
from esper_ab.sweeps.space import grid_points, params_from_flat
from esper_ab.stats import analyze
from esper_ab.sweeps.spec import parse_sweep_spec
from esper_ab.trial import BASELINE_LABEL

SPACE = {
    "name": "ttv", "fidelity": "multi",
    "workloads": [{"name": "synthetic-cnn", "slots": ["block2.pre_pool"],
                   "blueprints": ["norm", "attention", "depthwise", "bottleneck"],
                   "episode": {"size": "tiny"}}],
    "replicates": 2, "traces": {"source": "record"},
    "strategies": [
        {"name": "baseline", "threshold": {"choices": [0.05, 0.1, 0.5, 1.0, 2.0]}},
        {"name": "exponent", "params": {"a": {"choices": [0.0, 0.5, 1.0]}},
         "threshold": {"choices": [0.01, 0.1, 1.0]}},
        {"name": "first_order_value", "params": {"mode": {"choices": ["raw", "cosine"]}},
         "threshold": {"choices": [0.0, 0.1, 0.3]}},
        {"name": "mean_abs", "threshold": {"choices": [0.05, 0.2, 1.0]}}],
    "gate": {"window": ["last", "mean"], "min_epochs": [2, 10]},
    "objectives": [{"metric": "realized_utility"}],
    "sampler": {"kind": "grid"},
    "selection": {"objective": "realized_utility", "fairness_metric": "pass_rate_gap",
                  "max_gap": 1.0, "top_k": 2},
}


def _jobs(spec, gates, reps):
    entry = spec.workloads[0]
    return [ConfirmJob(label, gate, entry.name, r, entry.episode_config())
            for label, gate in gates.items() for r in reps]


def _verdict(spec, runs, traces, top):
    table = closed_loop_decisions(runs, traces.seeds)
    table = table[table["strategy"].isin([BASELINE_LABEL, *top])]
    a = analyze(table, baseline=BASELINE_LABEL, alpha=spec.selection.alpha,
                rule=spec.selection.rule(), n_boot=200, n_perm=4096)
    return a.verdict


def r_floor(top_k: int, alpha: float) -> int:
    """Fewest replicates at which the exact sign-flip test, Holm-adjusted over ``top_k``,
    can reach p < alpha: 2 * top_k / 2^R < alpha."""
    r = 1
    while 2 * top_k / 2 ** r >= alpha:
        r += 1
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-replicates", type=int, default=10)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=6, help="grid configs run on replicate 0 "
                    "to measure the naive grid's per-run cost (default mode)")
    ap.add_argument("--full", action="store_true", help="run the naive grid for real")
    ap.add_argument("--cache", default=None, help="cache dir (default: a fresh temp dir, so "
                    "that every unit is computed -- and measured -- in this run)")
    args = ap.parse_args()
    data = {**SPACE, "selection": {**SPACE["selection"], "top_k": args.top_k}}
    spec = parse_sweep_spec(data)
    points = grid_points(spec)
    grid = {f"g{i:03d}": params_from_flat(p, spec).gate_config() for i, p in enumerate(points)}
    root = Path(args.cache or tempfile.mkdtemp(prefix="esper_ab_ttv_"))
    cache, traces_dir = root / "cache", root / "traces"
    floor = r_floor(args.top_k, spec.selection.alpha)
    print(f"time to verdict: {len(grid)} grid configs + baseline, top_k {args.top_k}, "
          f"alpha {spec.selection.alpha} (exact test floor: {floor} replicates); tiny "
          f"synthetic-cnn, 4 blueprints; {args.workers} Ray workers; cache {root}")
    connect_ray(None, num_cpus=args.workers)
    try:
        multi = _multi(spec, grid, cache, traces_dir, args.max_replicates)
        naive = _naive_full(spec, grid, cache, multi, args.max_replicates) if args.full \
            else _naive_counted(spec, grid, cache, multi, floor, args.sample)
    finally:
        ray.shutdown()
    _report(multi, naive, len(grid), floor, args.full)


def _multi(spec, grid, cache, traces_dir, max_reps):
    ep_cpu = replay_cpu = 0.0
    units: dict[tuple[str, int], float] = {}
    verdict, reps = None, []
    for r in range(max_reps):
        reps.append(r)
        rec = record_space(spec, out_dir=traces_dir, cache_dir=cache, replicates=[r])
        ep_cpu += rec.compute_s
        traces = load_spec_traces(spec, traces_dir, replicates=reps)
        if len(reps) < 2:
            continue
        c0 = time.process_time()
        with tempfile.TemporaryDirectory() as folder:
            s = search_replay(spec, ReplayEvidence(traces), folder=folder)
        ranked = rank_trials(spec, s.trials).head(spec.selection.top_k)
        top = [f"g{int(n):03d}" for n in ranked["number"]]   # a fresh study: trial n = point n
        assert all(s.params[int(n)].gate_config() == grid[k]
                   for n, k in zip(ranked["number"], top, strict=True))
        replay_cpu += time.process_time() - c0
        gates = {BASELINE_LABEL: PRESETS[spec.baseline], **{k: grid[k] for k in top}}
        runs = run_confirmations(_jobs(spec, gates, reps), cache_dir=cache)
        for run in runs:
            units[(run.job.label, run.job.replicate)] = run.compute_s
        verdict = _verdict(spec, runs, traces, top)
        print(f"  multi-fidelity, {len(reps)} replicates: finalists {top}; "
              f"{'SIGNIFICANT' if verdict.winner else 'not yet'}: {verdict.reason[:110]}")
        if verdict.winner:
            break
    return {"replicates": len(reps), "episode_cpu_s": ep_cpu, "replay_cpu_s": replay_cpu,
            "closed_loop_runs": len(units), "closed_loop_cpu_s": sum(units.values()),
            "units": units, "verdict": verdict, "episodes": len(reps)}


def _naive_counted(spec, grid, cache, multi, floor, sample):
    picks = random.Random(0).sample(sorted(grid), min(sample, len(grid)))
    runs = run_confirmations(_jobs(spec, {k: grid[k] for k in picks}, [0]), cache_dir=cache)
    costs = [r.compute_s for r in runs] + list(multi["units"].values())
    per_run = sum(costs) / len(costs)
    n_runs = (len(grid) + 1) * floor
    return {"replicates": floor, "closed_loop_runs": n_runs, "cpu_per_run": per_run,
            "measured_runs": len(costs), "closed_loop_cpu_s": n_runs * per_run,
            "verdict": None}


def _naive_full(spec, grid, cache, multi, max_reps):
    traces_dir = Path(cache).parent / "traces"
    gates = {BASELINE_LABEL: PRESETS[spec.baseline], **grid}
    units: dict[tuple[str, int], float] = {}
    reps, verdict = [], None
    for r in range(max_reps):
        reps.append(r)
        runs = run_confirmations(_jobs(spec, gates, reps), cache_dir=cache)
        for run in runs:
            units[(run.job.label, run.job.replicate)] = run.compute_s
        if len(reps) < 2:
            continue
        traces = load_spec_traces(spec, traces_dir, replicates=reps)
        table = closed_loop_decisions(runs, traces.seeds)
        score = table.groupby("strategy")["value"].sum().drop(BASELINE_LABEL)
        top = list(score.sort_values(ascending=False).index[:spec.selection.top_k])
        verdict = _verdict(spec, runs, traces, top)
        print(f"  naive grid, {len(reps)} replicates: best {top}; "
              f"{'SIGNIFICANT' if verdict.winner else 'not yet'}")
        if verdict.winner:
            break
    return {"replicates": len(reps), "closed_loop_runs": len(units),
            "closed_loop_cpu_s": sum(units.values()),
            "cpu_per_run": sum(units.values()) / max(len(units), 1), "verdict": verdict}


def _report(multi, naive, g, floor, full):
    m_total = multi["episode_cpu_s"] + multi["replay_cpu_s"] + multi["closed_loop_cpu_s"]
    n_total = naive["closed_loop_cpu_s"]
    mv = multi["verdict"]
    print(f"\nmulti-fidelity: {'significant' if mv and mv.winner else 'NOT significant'} "
          f"after {multi['replicates']} replicates (winner {mv.winner if mv else None})")
    print(f"  episodes       {multi['episodes']:>5} x          = {multi['episode_cpu_s']:8.1f} "
          "CPU-s")
    print(f"  replay search  {g:>5} configs/step = {multi['replay_cpu_s']:8.1f} CPU-s")
    print(f"  closed loop    {multi['closed_loop_runs']:>5} runs       = "
          f"{multi['closed_loop_cpu_s']:8.1f} CPU-s")
    print(f"  total                            {m_total:8.1f} CPU-s")
    how = "run for real" if full else (
        f"counted: ({g} + 1) configs x {floor} replicates (exact-test floor) at "
        f"{naive['cpu_per_run']:.2f} CPU-s/run, the mean of {naive['measured_runs']} runs "
        "measured here; the replicate count is a lower bound, the per-run cost an "
        "estimate")
    print(f"naive closed-loop grid ({how}):")
    print(f"  closed loop    {naive['closed_loop_runs']:>5} runs       = {n_total:8.1f} CPU-s"
          f" over {naive['replicates']} replicates")
    ratio = n_total / m_total if m_total > 0 else math.nan
    print(f"\ntime-to-verdict compute ratio (naive / multi-fidelity): {ratio:.1f}"
          f"{'' if full else ' (naive counted)'} (target >= 10)")
    if not (mv and mv.winner):
        print("note: multi-fidelity reached no significant verdict within --max-replicates; "
              "the ratio compares compute spent, not compute to a verdict")


if __name__ == "__main__":
    main()
