"""``esper-ab demo`` (what ``make demo`` runs): the smoke sweep on embedded defaults.

What it does is ``DESCRIPTION`` below (plain text: it is also the ``--help`` text).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esper_ab.commands._options import (
    RAY_VERBOSE,
    add_cache_dir,
    add_output,
    add_schedule_timeout,
    preflight_resources,
    progress_for,
    schedule_timeout,
    ui_hint,
)

SMOKE = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"
DESCRIPTION = ("Run the smoke-sized study on embedded defaults (what 'make demo' runs): local "
               "embedded Ray, MLflow in sqlite:///mlflow.db in the working directory, the "
               "space search_spaces/smoke.yaml (synthetic traces with a planted truth). The "
               "search sees its replicates only; its top configs and the baseline are then "
               "confirmed on held-out replicates. Prints the confirmed three-way verdict "
               "(winner / not better / undecided) with the baseline's bias per blueprint "
               "beside the winner's, writes winner.yaml when there is a winner (or says why "
               "not), and tells how to open the MLflow UI.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the smoke sweep on embedded defaults (make demo)",
                       description=DESCRIPTION)
    p.add_argument("--space", default=str(SMOKE), metavar="SPACE.yaml",
                   help="the space to run (default: search_spaces/smoke.yaml)")
    p.add_argument("--out", default="winner.yaml", metavar="PATH",
                   help="where the winner goes (default: %(default)s)")
    add_cache_dir(p)
    add_schedule_timeout(p)
    add_output(p, verbose=RAY_VERBOSE)
    p.set_defaults(handler=run)


def _intro(spec: object) -> str:
    """What the demo is: a smoke-sized study, and on what."""
    traces = ("synthetic traces with a planted truth: the numbers are illustrative, not "
              "findings" if spec.traces.source == "synthetic" else
              f"{spec.workloads[0].name} episodes")
    split = (f"top {spec.confirm.top_k} confirmed on {len(spec.confirm_replicates)} held-out "
             "replicates" if spec.confirm_replicates else "no held-out confirmation")
    return (f"esper-ab demo: a smoke-sized study, not a finding -- sweep {spec.name!r}: "
            f"{spec.num_samples} trials searched on {len(spec.replicates)} replicates, "
            f"{split}; {traces}. Local Ray, MLflow in ./mlflow.db")


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands.export import NoWinner, export_winner
    from esper_ab.errors import ConfigError
    from esper_ab.sweeps.spec import load_sweep_spec
    from esper_ab.sweeps.summary import format_summary
    from esper_ab.sweeps.tune_runner import SweepOptions, run_sweep
    from esper_ab.tracking import SweepTracker

    if not Path(args.space).is_file():
        raise ConfigError(f"--space={args.space!r} does not exist: run the demo from an "
                          "esper-ab checkout (make demo) or pass --space SPACE.yaml")
    timeout = schedule_timeout(args)
    spec = load_sweep_spec(args.space)
    preflight_resources(spec, None)
    print(_intro(spec), flush=True)
    with progress_for(args) as progress:
        outcome = run_sweep(spec, options=SweepOptions(
            verbose=args.verbose, cache_dir=args.cache_dir, schedule_timeout_s=timeout,
            progress=progress))
    if outcome.confirmation is None:
        print(format_summary(outcome.analysis))
    else:   # the search stage briefly, then the held-out verdict, which is the sweep's
        from esper_ab.fidelity import format_confirmation

        search = outcome.analysis
        print(f"Search stage ({len(search.record.trials)} trials on replicates "
              f"{spec.replicates}; optimistic: chosen and tested on the same replicates): "
              f"{search.reason.splitlines()[0][:300]}")
        print("\n" + format_confirmation(outcome.confirmation))
    tracker = SweepTracker(None)
    try:
        path, doc = export_winner(tracker, outcome.experiment, outcome.sweep_run_id, args.out)
        print(f"\nwinner.yaml: {path.resolve()} ({doc.evidence.trial}); load it with "
              f"esper_ab.load_gate({str(path)!r})")
    except NoWinner as exc:
        print(f"\nNo winner.yaml written -- {exc}")
    print(f"\nReview it in MLflow: experiment {outcome.experiment!r}, sweep run "
          f"{outcome.sweep_run_id} (report.html under its artifacts).")
    print(ui_hint(tracker.uri))
    return 0
