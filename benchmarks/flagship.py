"""The flagship studies end to end on this machine, with their wall time.

For each space (default: ``search_spaces/g2_fairness_cnn.yaml`` and
``search_spaces/g2_fairness_transformer.yaml``):

1. **record** every search and confirmation replicate's episode as parallel Ray tasks
   (``esper-ab record``; cached, so a second run costs nothing here);
2. **search** at replay fidelity in process on the search replicates only, and **confirm**
   the top-k and the baseline by replay on the held-out replicates (``esper-ab replay``),
   tracked in MLflow (``sqlite:///<out>/mlflow.db``);
3. print the confirmed verdict, the baseline's bias per blueprint beside the winner's, and
   the wall time of each stage and in all.

    python benchmarks/flagship.py [SPACE.yaml ...] [--out DIR] [--cpus 2]
    python benchmarks/flagship.py SPACE.yaml --plan 4    # the pilot and the power plan only

The README's findings section quotes this script's output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPACES = [REPO / "search_spaces" / "g2_fairness_cnn.yaml",
          REPO / "search_spaces" / "g2_fairness_transformer.yaml"]


def run_space(path: Path, out: Path, cpus: int) -> dict[str, float]:
    import ray

    from esper_ab.fidelity.replay_sweep import ReplaySweepOptions, run_replay_sweep
    from esper_ab.progress import Progress
    from esper_ab.replay import ReplayEvidence
    from esper_ab.study.confirmation import format_confirmation
    from esper_ab.study.recording import load_spec_traces, record_space
    from esper_ab.study.runtime import connect_ray
    from esper_ab.study.spec import load_sweep_spec

    spec = load_sweep_spec(path)
    print(f"== {spec.name}: {spec.split_text()}", flush=True)
    traces_dir, cache = out / spec.name / "traces", out / ".esper_ab_cache"
    t0 = time.perf_counter()
    started = connect_ray(None, num_cpus=cpus)
    try:
        with Progress() as progress:   # a bar on a terminal, a timestamped line per episode off one
            rec = record_space(spec, out_dir=traces_dir, cache_dir=cache, progress=progress)
    finally:
        if started:
            ray.shutdown()
    t1 = time.perf_counter()
    per = rec.compute_s / rec.recorded if rec.recorded else float("nan")
    print(f"recorded {rec.recorded} episode(s) ({rec.cached} cached) in {t1 - t0:.0f} s: "
          f"{rec.compute_s:.0f} CPU-s, {per:.0f} CPU-s per episode; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    search = ReplayEvidence(load_spec_traces(spec, traces_dir), folds=spec.calibration_folds)
    held = ReplayEvidence(load_spec_traces(spec, traces_dir,
                                           replicates=spec.confirm_replicates),
                          folds=spec.calibration_folds)
    # A fresh study each run (the episodes are cached; the search is what is measured):
    # the same folder would continue the last run's Optuna study with other finalists.
    shutil.rmtree(out / "sweeps" / spec.name, ignore_errors=True)
    result = run_replay_sweep(spec, evidence=search, confirm_evidence=held,
                              options=ReplaySweepOptions(
                                  tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
                                  storage_dir=str(out / "sweeps")))
    t2 = time.perf_counter()
    s = result.search
    print(f"searched {s.n_configs} configs on {s.n_replicates} replicates and confirmed the "
          f"top {spec.confirm.top_k} in {t2 - t1:.0f} s")
    if result.confirmation is not None:
        print(format_confirmation(result.confirmation))
    else:
        print(f"verdict (search stage only): {result.reason}")
    wall = {"record_s": t1 - t0, "search_confirm_s": t2 - t1, "total_s": t2 - t0}
    print(f"wall time {spec.name}: record {wall['record_s']:.0f} s, search + confirm "
          f"{wall['search_confirm_s']:.0f} s, total {wall['total_s'] / 60:.1f} min "
          f"({cpus} CPUs)\n", flush=True)
    return wall


def plan_space(path: Path, out: Path, cpus: int, pilot: int, seed: int = 0) -> int:
    """The pilot and the power plan: record the first ``pilot`` search replicates, search on
    them in process, take the best config of each of the top 3 strategies, measure per
    blueprint the valuable fraction and every gate's TPR/FPR, then plan the confirmation:
    ``esper_ab.stats.plan_replicates`` on a simulated design with the pilot's rates, and the
    analytic planner at the pilot's measured paired SD per replicate, for a winner (Holm
    over the confirmed candidates) and for "not better than the baseline" within the
    space's margin (the verdict's equivalence bound). Never records or reads a held-out
    replicate."""
    import tempfile

    import numpy as np
    import ray
    from scipy import stats as sps

    from esper_ab.gate import PRESETS
    from esper_ab.replay import ReplayEvidence
    from esper_ab.stats import SimulationDesign, StrategySpec, plan_replicates
    from esper_ab.study.recording import load_spec_traces, record_space
    from esper_ab.study.replay_search import rank_trials, search_replay
    from esper_ab.study.runtime import connect_ray
    from esper_ab.study.spec import load_sweep_spec

    spec = load_sweep_spec(path)
    reps = spec.search_replicates[:pilot]
    pilot_spec = spec.model_copy(update={   # the pilot never records or reads a held-out one
        "replicates": reps, "confirm": spec.confirm.model_copy(update={"replicates": None})})
    traces_dir, cache = out / spec.name / "traces", out / ".esper_ab_cache"
    t0 = time.perf_counter()
    started = connect_ray(None, num_cpus=cpus)
    try:
        record_space(pilot_spec, out_dir=traces_dir, cache_dir=cache)
    finally:
        if started:
            ray.shutdown()
    ev = ReplayEvidence(load_spec_traces(pilot_spec, traces_dir), folds=spec.calibration_folds)
    search = search_replay(pilot_spec, ev, folder=tempfile.mkdtemp(prefix="esper_ab_plan_"))
    ranked = rank_trials(pilot_spec, search.trials)
    from esper_ab.trial import metric_key
    obj = metric_key(spec.selection.objective)
    best = ranked.groupby("strategy")[obj].max().sort_values(ascending=False)
    print(f"pilot search: {search.n_configs} configs, best {obj} per strategy: " +
          ", ".join(f"{k} {v:.3f}" for k, v in best.items()))
    top = ranked.drop_duplicates("strategy").head(spec.confirm.top_k)
    gates = {"baseline": PRESETS[spec.baseline]}   # the preset, as the verdict's baseline
    gates.update({f"{r.strategy}-t{int(r.number)}": search.params[int(r.number)].gate_config()
                  for r in top.itertuples()})
    tables = {k: ev.decisions(g, label=k, replicates=reps) for k, g in gates.items()}
    base = tables["baseline"]
    blueprints = tuple(sorted(b for b in base["blueprint"].unique()
                              if b not in ("placebo", "noop")))
    val = base[base["blueprint"].isin(blueprints)]
    p_val = val.groupby("blueprint")["valuable"].mean().reindex(list(blueprints))
    print(f"pilot on replicates {reps} ({time.perf_counter() - t0:.0f} s): valuable fraction "
          "per blueprint " + ", ".join(f"{b} {p:.2f}" for b, p in p_val.items()))
    specs = []
    for name, t in tables.items():
        t = t[t["blueprint"].isin(blueprints)]
        g = t.groupby("blueprint")
        # Laplace-smoothed rates: a pilot of a few replicates never plants a rate of 0 or 1
        tpr = g.apply(lambda d: (d["passed"][d["valuable"]].sum() + 1)
                      / (d["valuable"].sum() + 2)).reindex(list(blueprints))
        fpr = g.apply(lambda d: (d["passed"][~d["valuable"]].sum() + 1)
                      / ((~d["valuable"]).sum() + 2)).reindex(list(blueprints))
        ba = 0.5 * (t["passed"][t["valuable"]].mean() + 1 - t["passed"][~t["valuable"]].mean())
        print(f"  {name:<26} balanced accuracy {ba:.3f}; TPR " +
              " ".join(f"{v:.2f}" for v in tpr) + "; FPR " + " ".join(f"{v:.2f}" for v in fpr))
        specs.append(StrategySpec(name=name, tpr=tuple(tpr), fpr=tuple(fpr)))
    means = tuple(float(sps.norm.ppf(np.clip(p, 0.02, 0.98))) for p in p_val)
    design = SimulationDesign(blueprints=blueprints, strategies=tuple(specs),
                              seeds_per_cell=len(spec.workloads[0].slot_list),
                              value_means=means, value_sd=1.0, margin=0.0)
    rule = spec.selection.rule()
    cands = list(gates)[1:]
    for name in cands:
        plan = plan_replicates(design, strategy=name, rule=rule, alpha=spec.selection.alpha,
                               target_power=0.8, n_sims=100, n_perm=300, seed=seed,
                               max_rounds=2, max_replicates=60)
        n = plan.n_replicates
        print(f"  plan_replicates for {name}: effect {plan.effect:+.3f} (sd per replicate "
              f"{plan.sd_per_replicate:.3f}), analytic {plan.analytic}, simulated "
              f"{list(plan.evaluated)} -> {n if n else plan.message}")
    # The simulated design draws each gate's decisions independently given value, which
    # overstates the SD of a paired difference between two gates that share most decisions
    # (raw vs baseline differ only by a constant per blueprint); so the confirmation is
    # planned with the analytic planner (esper_ab.stats._power.replicates_for, the one the
    # verdict's "undecided: N more" uses) at the pilot's measured per-replicate paired SD.
    from esper_ab.stats._power import replicates_for

    def per_rep_ba(t):
        t = t[t["blueprint"].isin(blueprints)]
        return t.groupby("replicate").apply(
            lambda d: 0.5 * (d["passed"][d["valuable"]].mean()
                             + 1 - d["passed"][~d["valuable"]].mean()))

    b0, m = per_rep_ba(base), max(1, len(cands))
    alpha, margin = spec.selection.alpha, rule.margin
    needs = []
    for name in cands:
        d = (per_rep_ba(tables[name]) - b0).dropna()
        eff, sd = float(d.mean()), float(d.std(ddof=1))
        win = replicates_for(eff, sd, alpha / m, 0.8) if eff > 0 else None
        nb = replicates_for(margin - eff, sd, 2 * alpha, 0.8) if eff < margin else None
        needs.append(min(x for x in (win, nb, 10_000) if x is not None))
        print(f"  {name}: paired gain {eff:+.3f} (sd per replicate {sd:.3f}, {len(d)} "
              f"replicates): winner at 80% power after {win} replicates, 'not better "
              f"than +{margin}' at 80% after {nb}")
    print(f"  planned confirmation replicates (the most any candidate needs): {max(needs)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spaces", nargs="*", type=Path, default=SPACES)
    ap.add_argument("--out", type=Path, default=REPO / "flagship_runs")
    ap.add_argument("--cpus", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--plan", type=int, metavar="P", default=0,
                    help="only the pilot on the first P search replicates and the power plan")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plan:
        for p in args.spaces:
            plan_space(p, args.out.resolve(), args.cpus, args.plan)
        return 0
    walls = {p.stem: run_space(p, args.out.resolve(), args.cpus) for p in args.spaces}
    for name, w in walls.items():
        print(f"{name}: {w['total_s'] / 60:.1f} min wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
