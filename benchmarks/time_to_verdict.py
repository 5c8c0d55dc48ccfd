"""Time to a significant verdict: a naive closed-loop grid vs the multi-fidelity study.

Both answer the same question on the same grid of gate configs -- does some config beat the
baseline gate in the closed loop, significantly? -- each with its own valid rule:

- **multi-fidelity** (run for real, ``esper_ab.fidelity.run_multi_fidelity``, the study's
  design): record the search replicates' episodes (Ray tasks), replay-search the whole grid
  on them in process, then confirm the ``top_k`` finalists and the baseline in the closed
  loop on held-out replicates (disjoint from the search's), one replicate at a time, with
  the always-valid sequential test (``esper_ab.stats.sequential_test``: e-processes, Holm
  over the top_k only) stopping as soon as every finalist is settled. The episodes of every
  confirmation replicate are recorded up front (their seeds' values judge the closed loop),
  used or not, and counted.
- **naive grid**: every grid config + the baseline in the closed loop on every replicate
  until its verdict is significant (the top_k by closed-loop result, exact sign-flip test,
  Holm over the top_k). Default: *counted*, not run: (G + 1) x R_floor closed-loop runs at
  the mean measured CPU-seconds per run (this run's confirmation runs plus ``--sample``
  grid configs run on replicate 0); R_floor is the fewest replicates at which any data can
  be significant (smallest two-sided p 2 / 2^R, times top_k for Holm): a lower bound.
  ``--full`` runs it for real (about (G + 1) x R x 1.5 CPU-s).

Compute = CPU-seconds (``time.process_time`` of the Ray worker of each episode or closed-loop
run; the in-process search's and the finalists' analysis CPU time), each unit measured once
in this run. ``--grid large`` multiplies the thresholds searched (a study searches hundreds
of configs): the naive cost grows with the grid, the multi-fidelity cost barely does.

    python benchmarks/time_to_verdict.py [--grid small|large] [--search 3] [--confirm 10]
        [--top-k 2] [--full] [--workers 2] [--sample 6] [--cache DIR]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

import ray

from esper_ab.fidelity import MultiFidelityOptions, run_multi_fidelity
from esper_ab.gate import PRESETS
from esper_ab.stats import analyze
from esper_ab.study.agreement import closed_loop_decisions
from esper_ab.study.confirmation import ConfirmJob, run_confirmations
from esper_ab.study.recording import load_spec_traces, record_space
from esper_ab.study.runtime import connect_ray
from esper_ab.study.space import grid_points, params_from_flat
from esper_ab.study.spec import parse_sweep_spec
from esper_ab.trial import BASELINE_LABEL

THRESHOLDS = {"small": {"baseline": [0.05, 0.1, 0.5, 1.0, 2.0], "exponent": [0.01, 0.1, 1.0],
                        "first_order_value": [0.0, 0.1, 0.3], "mean_abs": [0.05, 0.2, 1.0]},
              "large": {"baseline": [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0],
                        "exponent": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                        "first_order_value": [-0.1, 0.0, 0.05, 0.1, 0.2, 0.3],
                        "mean_abs": [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]}}


def space(grid: str, search: int, confirm: int, top_k: int) -> dict:
    t = THRESHOLDS[grid]
    return {
        "name": f"ttv_{grid}", "fidelity": "multi",
        "workloads": [{"name": "synthetic-cnn", "slots": ["block2.pre_pool"],
                       "blueprints": ["norm", "attention", "depthwise", "bottleneck"],
                       "episode": {"size": "tiny"}}],
        "replicates": {"search": list(range(search)),
                       "confirm": list(range(search, search + confirm))},
        "traces": {"source": "record"},
        "strategies": [
            {"name": "baseline", "threshold": {"choices": t["baseline"]}},
            {"name": "exponent", "params": {"a": {"choices": [0.0, 0.5, 1.0]}},
             "threshold": {"choices": t["exponent"]}},
            {"name": "first_order_value", "params": {"mode": {"choices": ["raw", "cosine"]}},
             "threshold": {"choices": t["first_order_value"]}},
            {"name": "mean_abs", "threshold": {"choices": t["mean_abs"]}}],
        "gate": {"window": ["last", "mean"], "min_epochs": [2, 10]},
        "objectives": [{"metric": "realized_utility"}],
        "sampler": {"kind": "grid"},
        "selection": {"objective": "realized_utility", "fairness_metric": "pass_rate_gap",
                      "max_gap": 1.0, "top_k": top_k},
        "confirm": {"top_k": top_k, "sequential": True},
    }


def _jobs(spec, gates, reps):
    entry = spec.workloads[0]
    return [ConfirmJob(label, gate, entry.name, r, entry.episode_config())
            for label, gate in gates.items() for r in reps]


def r_floor(top_k: int, alpha: float) -> int:
    """Fewest replicates at which the exact sign-flip test, Holm-adjusted over ``top_k``,
    can reach p < alpha: 2 * top_k / 2^R < alpha."""
    r = 1
    while 2 * top_k / 2 ** r >= alpha:
        r += 1
    return r


def run_multi(spec, root: Path) -> dict:
    out = run_multi_fidelity(spec, options=MultiFidelityOptions(
        tracking_uri=f"sqlite:///{root}/mlflow.db", storage_dir=str(root / "sweeps"),
        cache_dir=str(root / "cache"), n_boot=200, n_perm=500))
    c = out.compute
    conf = out.confirmation
    used = len(conf.replicates) if conf is not None else 0
    print(f"  multi-fidelity: finalists confirmed on {used} of "
          f"{len(spec.confirm_replicates)} held-out replicates; winner {out.winner}: "
          f"{out.reason[:160]}", flush=True)
    return {"winner": out.winner, "confirm_used": used,
            "episodes": int(c.get("episodes_recorded", 0)),
            "episode_cpu_s": float(c.get("episode_cpu_s", 0.0)),
            "replay_cpu_s": float(c.get("replay_search_cpu_s", 0.0))
            + float(c.get("replay_finalists_cpu_s", 0.0)),
            "closed_loop_runs": int(c.get("closed_loop_runs", 0)),
            "closed_loop_cpu_s": float(c.get("closed_loop_cpu_s", 0.0)),
            "configs": int(c.get("replay_configs", 0))}


def naive_counted(spec, grid, cache, multi, floor, sample) -> dict:
    picks = random.Random(0).sample(sorted(grid), min(sample, len(grid)))
    runs = run_confirmations(_jobs(spec, {k: grid[k] for k in picks}, [0]), cache_dir=cache)
    costs = [r.compute_s for r in runs if not r.cached]
    if multi["closed_loop_runs"]:
        costs += [multi["closed_loop_cpu_s"] / multi["closed_loop_runs"]] * \
            multi["closed_loop_runs"]
    per_run = sum(costs) / len(costs)
    n_runs = (len(grid) + 1) * floor
    return {"replicates": floor, "closed_loop_runs": n_runs, "cpu_per_run": per_run,
            "measured_runs": len(costs), "closed_loop_cpu_s": n_runs * per_run}


def naive_full(spec, grid, cache, traces_dir, max_reps) -> dict:
    gates = {BASELINE_LABEL: PRESETS[spec.baseline], **grid}
    units: dict[tuple[str, int], float] = {}
    reps = []
    for r in range(max_reps):
        reps.append(r)
        runs = run_confirmations(_jobs(spec, gates, reps), cache_dir=cache)
        for run in runs:
            if not run.cached:
                units[(run.job.label, run.job.replicate)] = run.compute_s
        if len(reps) < 2:
            continue
        record_space(spec, out_dir=traces_dir, cache_dir=cache, replicates=reps)
        traces = load_spec_traces(spec, traces_dir, replicates=reps)
        table = closed_loop_decisions(runs, traces.seeds)
        score = table.groupby("strategy")["value"].sum().drop(BASELINE_LABEL)
        top = list(score.sort_values(ascending=False).index[:spec.selection.top_k])
        table = table[table["strategy"].isin([BASELINE_LABEL, *top])]
        verdict = analyze(table, baseline=BASELINE_LABEL, alpha=spec.selection.alpha,
                          rule=spec.selection.rule(), n_boot=200, n_perm=4096).verdict
        print(f"  naive grid, {len(reps)} replicates: best {top}; "
              f"{'SIGNIFICANT' if verdict.winner else 'not yet'}", flush=True)
        if verdict.winner:
            break
    return {"replicates": len(reps), "closed_loop_runs": len(units),
            "closed_loop_cpu_s": sum(units.values()),
            "cpu_per_run": sum(units.values()) / max(len(units), 1), "measured_runs": len(units)}


def report(multi: dict, naive: dict, g: int, floor: int, full: bool) -> None:
    m_total = multi["episode_cpu_s"] + multi["replay_cpu_s"] + multi["closed_loop_cpu_s"]
    n_total = naive["closed_loop_cpu_s"]
    print(f"\nmulti-fidelity: {'winner ' + str(multi['winner']) if multi['winner'] else 'no winner'}"
          f" (sequential confirmation used {multi['confirm_used']} held-out replicates)")
    print(f"  episodes       {multi['episodes']:>5}            = {multi['episode_cpu_s']:8.1f} "
          "CPU-s (search + every confirmation replicate)")
    print(f"  replay search  {multi['configs']:>5} configs     = {multi['replay_cpu_s']:8.1f} "
          "CPU-s (with the finalists' full analyses)")
    print(f"  closed loop    {multi['closed_loop_runs']:>5} runs        = "
          f"{multi['closed_loop_cpu_s']:8.1f} CPU-s")
    print(f"  total                             {m_total:8.1f} CPU-s")
    how = "run for real" if full else (
        f"counted: ({g} + 1) configs x {floor} replicates (exact-test floor) at "
        f"{naive['cpu_per_run']:.2f} CPU-s/run, the mean of {naive['measured_runs']} runs "
        "measured here; the replicate count is a lower bound, the per-run cost an estimate")
    print(f"naive closed-loop grid ({how}):")
    print(f"  closed loop    {naive['closed_loop_runs']:>5} runs        = {n_total:8.1f} CPU-s"
          f" over {naive['replicates']} replicates")
    ratio = n_total / m_total if m_total > 0 else math.nan
    print(f"\ntime-to-verdict compute ratio (naive / multi-fidelity): {ratio:.1f}"
          f"{'' if full else ' (naive counted)'}, {g} grid configs (target >= 50)")
    if not multi["winner"]:
        print("note: the multi-fidelity study reached no winner (the sequential test may "
              "settle 'not better'); the ratio compares compute spent")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=sorted(THRESHOLDS), default="small")
    ap.add_argument("--search", type=int, default=3, help="search replicates")
    ap.add_argument("--confirm", type=int, default=10, help="held-out replicates at most")
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=6, help="grid configs run on replicate 0 "
                    "to measure the naive grid's per-run cost (default mode)")
    ap.add_argument("--full", action="store_true", help="run the naive grid for real")
    ap.add_argument("--max-replicates", type=int, default=12, help="naive grid, --full")
    ap.add_argument("--cache", default=None, help="work dir (default: a fresh temp dir, so "
                    "that every unit is computed -- and measured -- in this run)")
    args = ap.parse_args()
    spec = parse_sweep_spec(space(args.grid, args.search, args.confirm, args.top_k))
    grid = {f"g{i:03d}": params_from_flat(p, spec).gate_config()
            for i, p in enumerate(grid_points(spec))}
    root = Path(args.cache or tempfile.mkdtemp(prefix="esper_ab_ttv_"))
    cache = root / "cache"
    floor = r_floor(args.top_k, spec.selection.alpha)
    print(f"time to verdict: {len(grid)} grid configs + baseline, top_k {args.top_k}, alpha "
          f"{spec.selection.alpha} (naive exact-test floor: {floor} replicates); search on "
          f"{args.search} replicates, sequential confirmation on up to {args.confirm} held-out "
          f"ones; tiny synthetic-cnn, 4 blueprints; {args.workers} Ray workers; {root}",
          flush=True)
    connect_ray(None, num_cpus=args.workers)
    try:
        multi = run_multi(spec, root)
        naive = naive_full(spec, grid, cache, root / "traces", args.max_replicates) \
            if args.full else naive_counted(spec, grid, cache, multi, floor, args.sample)
    finally:
        ray.shutdown()
    report(multi, naive, len(grid), floor, args.full)


if __name__ == "__main__":
    main()
