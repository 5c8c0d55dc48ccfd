"""``esper-ab report``: rebuild a sweep's report from MLflow alone."""

from __future__ import annotations

import argparse

from esper_ab.commands._options import (
    add_experiment,
    add_output,
    add_resampling,
    add_tracking_uri,
    progress_for,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a sweep's report.html from MLflow",
                       description="Read a sweep back from MLflow (parent run, trial runs and "
                                   "their decision tables), redo the cross-trial analysis and "
                                   "write report.html, the plots and the analysis to DIR.")
    add_experiment(p)
    add_tracking_uri(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_resampling(p)
    add_output(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from esper_ab.study.preflight import check_tracking_uri, usable_dir
    from esper_ab.study.summary import format_summary, summarize_sweep
    from esper_ab.tracking import SweepTracker

    check_tracking_uri(args.tracking_uri, existing=True)   # read only: create nothing
    usable_dir(args.out, "--out")
    tracker = SweepTracker(args.tracking_uri)
    with progress_for(args) as progress:
        result = summarize_sweep(tracker, args.experiment, args.sweep_run, n_boot=args.n_boot,
                                 n_perm=args.n_perm, out=args.out, progress=progress)
    print(format_summary(result))
    print(f"\nwrote {Path(args.out).resolve() / 'report.html'}")
    return 0
