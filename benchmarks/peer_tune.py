"""esper-ab's Ray Tune sweep against a hand-glued peer on the same replay evaluations.

The peer is what a user would write with the same three tools and esper-ab's replay API:
a Tune function trainable that replays one config (``ReplayEvidence.decisions`` for the
config and the baseline gate) and scores it (``esper_ab.trial.trial_metrics``), searched by
``OptunaSearch`` over the same define-by-run space and sampler, logged by Ray's
``MLflowLoggerCallback`` (one MLflow run per trial), one Tune trial per config. esper-ab runs
``run_sweep`` on the same space and traces (batched Tune trials, the table of every config and
the finalists' full analyses in MLflow, the report). Both on the same local Ray, one after the
other; the flagship's space (``benchmarks/_flagship.py``).

    python benchmarks/peer_tune.py [--configs 40] [--concurrency 2] [--traces DIR]

Prints esper-ab's wall time over the peer's, end to end and for the Tune search alone
(target < 0.5). The default budget is small because the peer pays a Tune trial per config
(on this project's loaded 2-core machine ~15-20 s of wall per trial, so 200 configs would
take about an hour); esper-ab's batching amortizes more the more configs there are, so a
larger ``--configs`` only lowers the ratio. ``--configs`` must be >= 32 for esper-ab to
batch (``batches.MIN_BATCHED``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from _flagship import flagship_space, start_sweep_ray  # noqa: E402


def peer_trainable(config, *, spec, evidence):
    """One config per trial, as a user would glue it."""
    import pandas as pd
    from ray import tune

    from esper_ab.gate import PRESETS
    from esper_ab.study.space import params_from_flat
    from esper_ab.trial import BASELINE_LABEL, CANDIDATE_LABEL, trial_metrics

    params = params_from_flat(config, spec)
    reps = list(evidence.replicates)
    table = pd.concat([evidence.decisions(params.gate_config(), label=CANDIDATE_LABEL,
                                          replicates=reps),
                       evidence.decisions(PRESETS[spec.baseline], label=BASELINE_LABEL,
                                          replicates=reps)], ignore_index=True)
    metrics, _, _ = trial_metrics(table, final=False)
    tune.report(metrics)


def run_peer(spec, evidence, tmp: str, concurrency: int) -> float:
    import optuna
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from esper_ab.study.space import define_by_run

    objective = spec.objectives[0]
    sampler = optuna.samplers.TPESampler(seed=spec.sampler.seed,
                                         n_startup_trials=spec.sampler.n_startup_trials or 10)
    searcher = OptunaSearch(space=define_by_run(spec), metric=f"g2.{objective.metric}",
                            mode=objective.direction, sampler=sampler)
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(peer_trainable, spec=spec, evidence=evidence),
                            {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=spec.num_samples,
                                    max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(
            storage_path=f"{tmp}/peer_tune", verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=f"sqlite:///{tmp}/peer.db",
                                            experiment_name="peer", save_artifact=False)]))
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    errors = sum(1 for r in grid if r.error)
    print(f"  peer: {len(grid)} trials ({errors} errored), Tuner.fit {wall:.1f} s "
          f"({wall / max(len(grid), 1):.2f} s per config)", flush=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--traces", default=None, help="recorded traces (esper-ab record --out)")
    args = ap.parse_args()

    from esper_ab.replay import evidence_for_spec
    from esper_ab.study.spec import parse_sweep_spec
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    spec = parse_sweep_spec(flagship_space(configs=args.configs, concurrency=args.concurrency,
                                           traces_dir=args.traces, name="peer_tune"),
                            source="benchmark")
    print(f"peer benchmark: the flagship space, {spec.num_samples} configs x "
          f"{len(spec.replicates)} replicates, concurrency {args.concurrency}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        evidence = evidence_for_spec(spec, cache_dir=tmp)
        start_sweep_ray(args.concurrency)
        t0 = time.perf_counter()
        out = run_sweep(spec, evidence=evidence, options=SweepOptions(
            tracking_uri=f"sqlite:///{tmp}/mlflow.db", num_cpus=args.concurrency))
        ours = time.perf_counter() - t0
        print(f"  esper-ab: run_sweep {ours:.1f} s end to end (Tuner.fit {out.fit_wall_s:.1f} s, "
              f"then finalists, analysis, report), {out.status}", flush=True)
        peer = run_peer(spec, evidence, tmp, args.concurrency)
    print(f"esper-ab / peer wall time: {ours / peer:.2f} end to end, "
          f"{out.fit_wall_s / peer:.2f} Tune search alone (target < 0.5)")


if __name__ == "__main__":
    main()
