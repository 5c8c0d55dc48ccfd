"""``esper-ab sweep``: run a search space on Ray Tune + Optuna, tracked in MLflow."""

from __future__ import annotations

import argparse

from esper_ab.commands._sweep_args import add_tracking_uri, ui_hint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a sweep (Ray Tune + Optuna, tracked in MLflow)",
        description="Search the strategies of SPACE.yaml: one Tune trial per sampled gate "
                    "config, every trial on the same replicates; one MLflow parent run per "
                    "sweep with a nested run per trial; the verdict is printed at the end.")
    p.add_argument("space", metavar="SPACE.yaml", help="a search_spaces/*.yaml file")
    p.add_argument("--address", default=None, metavar="A",
                   help="join a Ray cluster (auto, ray://HOST:10001, HOST:6379); default: "
                        "embedded local Ray (or RAY_ADDRESS inside a Ray job)")
    add_tracking_uri(p)
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="override num_samples of the space")
    p.add_argument("--smoke-test", action="store_true",
                   help="a minutes-long run: at most 3 trials on the first 2 replicates")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep of this space (same file, same options)")
    p.add_argument("--storage-dir", default=None, metavar="DIR",
                   help="where the Optuna journal and Tune state live (default: "
                        "esper_ab_sweeps/ next to the sqlite store, or ./esper_ab_sweeps)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="Tune's progress output (default: %(default)s)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from esper_ab.sweeps.spec import load_sweep_spec
    from esper_ab.sweeps.summary import format_summary
    from esper_ab.sweeps.tune_runner import SweepOptions, run_sweep

    spec = load_sweep_spec(args.space).with_overrides(num_samples=args.num_samples,
                                                      smoke_test=args.smoke_test)
    if spec.fidelity == "multi":   # replay search, then closed-loop confirmation (issue 6)
        from esper_ab.commands._multi import run_multi

        return run_multi(spec, args)
    options = SweepOptions(address=args.address, tracking_uri=args.tracking_uri,
                           storage_dir=args.storage_dir, resume=args.resume,
                           verbose=args.verbose)
    outcome = run_sweep(spec, options=options)
    if outcome.analysis is not None:
        print(format_summary(outcome.analysis))
    if outcome.confirmation is not None:   # the held-out verdict is the sweep's
        from esper_ab.fidelity import format_confirmation

        print("\n" + format_confirmation(outcome.confirmation))
    from esper_ab.tracking import resolve_tracking_uri

    print(f"\nMLflow: experiment {outcome.experiment!r}, sweep run {outcome.sweep_run_id}")
    print(ui_hint(resolve_tracking_uri(args.tracking_uri)))
    return 0
