"""``esper-ab sweep``: run a search space on Ray Tune + Optuna, tracked in MLflow."""

from __future__ import annotations

import argparse

from esper_ab.commands._options import (
    RAY_VERBOSE,
    SPACE_FIX,
    add_address,
    add_cache_dir,
    add_num_samples,
    add_output,
    add_resampling,
    add_schedule_timeout,
    add_storage_dir,
    add_tracking_uri,
    existing_file,
    preflight_resources,
    preflight_workloads,
    progress_for,
    schedule_timeout,
    ui_hint,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a sweep (Ray Tune + Optuna, tracked in MLflow)",
        description="Search the strategies of SPACE.yaml: one Tune trial per sampled gate "
                    "config, every trial on the same replicates; one MLflow parent run per "
                    "sweep with a nested run per trial; the verdict is printed at the end. "
                    "The space's resources are checked against the cluster first (gpu: auto "
                    "uses a GPU share when there are GPUs, the CPU otherwise).")
    p.add_argument("space", metavar="SPACE.yaml", help="a search_spaces/*.yaml file")
    add_address(p)
    add_tracking_uri(p)
    add_num_samples(p)
    p.add_argument("--smoke-test", action="store_true",
                   help="a minutes-long run: at most 3 trials on the first 2 replicates")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep of this space (same file, same options)")
    add_storage_dir(p)
    add_cache_dir(p)
    add_resampling(p)
    add_schedule_timeout(p)
    add_output(p, verbose=RAY_VERBOSE)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    existing_file(args.space, "sweep space", SPACE_FIX)   # before the heavy imports
    timeout = schedule_timeout(args)
    from esper_ab.study.spec import load_sweep_spec
    from esper_ab.study.summary import format_summary
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    spec = load_sweep_spec(args.space).with_overrides(num_samples=args.num_samples,
                                                      smoke_test=args.smoke_test)
    preflight_resources(spec, args.address)
    preflight_workloads(spec)
    print(f"esper-ab sweep: {spec.name!r} ({spec.fidelity}, {spec.num_samples} trial(s) on "
          f"{len(spec.replicates)} replicate(s), {spec.max_concurrent} at a time); starting "
          "Ray", flush=True)
    if spec.fidelity == "multi":   # replay search, then closed-loop confirmation (issue 6)
        from esper_ab.commands._multi import run_multi

        return run_multi(spec, args)
    with progress_for(args) as progress:
        options = SweepOptions(address=args.address, tracking_uri=args.tracking_uri,
                               storage_dir=args.storage_dir, resume=args.resume,
                               verbose=args.verbose, n_boot=args.n_boot, n_perm=args.n_perm,
                               cache_dir=args.cache_dir, schedule_timeout_s=timeout,
                               progress=progress)
        outcome = run_sweep(spec, options=options)
    if outcome.analysis is not None:
        print(format_summary(outcome.analysis))
    if outcome.confirmation is not None:   # the held-out verdict is the sweep's
        from esper_ab.study.confirmation import format_confirmation

        print("\n" + format_confirmation(outcome.confirmation))
    from esper_ab.tracking import resolve_tracking_uri

    print(f"\nMLflow: experiment {outcome.experiment!r}, sweep run {outcome.sweep_run_id}")
    print(ui_hint(resolve_tracking_uri(args.tracking_uri), outcome.sweep_run_id))
    return 0
