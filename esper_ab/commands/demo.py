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
DEMO_DIR = "esper_ab_demo"
DESCRIPTION = ("Run the smoke-sized study on embedded defaults (what 'make demo' runs): local "
               "embedded Ray, everything in its own folder (--dir: MLflow in DIR/mlflow.db, the "
               "sweep state, the cache and DIR/winner.yaml; nothing else is written), the "
               "space search_spaces/smoke.yaml (synthetic traces with a planted truth). Each "
               "run is a new sweep with a new Optuna study, so the same space gives the same "
               "answer. The "
               "search sees its replicates only; its top configs and the baseline are then "
               "confirmed on held-out replicates. Prints the confirmed three-way verdict "
               "(winner / not better / undecided) with the baseline's bias per blueprint "
               "beside the winner's, writes DIR/winner.yaml when there is a winner (or says "
               "why not), and tells how to open the MLflow UI.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the smoke sweep on embedded defaults (make demo)",
                       description=DESCRIPTION)
    p.add_argument("--space", default=str(SMOKE), metavar="SPACE.yaml",
                   help="the space to run (default: search_spaces/smoke.yaml)")
    p.add_argument("--dir", default=DEMO_DIR, metavar="DIR",
                   help="the demo's own folder: MLflow store, sweep state, cache, winner.yaml")
    add_cache_dir(p, note="; a relative path is inside --dir")
    add_schedule_timeout(p)
    add_output(p, verbose=RAY_VERBOSE)
    p.set_defaults(handler=run)


def _intro(spec: object, folder: str) -> str:
    """What the demo is: a smoke-sized study, and on what."""
    traces = ("synthetic traces with a planted truth: the numbers are illustrative, not "
              "findings" if spec.traces.source == "synthetic" else
              f"{spec.workloads[0].name} episodes")
    split = (f"top {spec.confirm.top_k} confirmed on {len(spec.confirm_replicates)} held-out "
             "replicates" if spec.confirm_replicates else "no held-out confirmation")
    return (f"esper-ab demo: a smoke-sized study, not a finding -- sweep {spec.name!r}: "
            f"{spec.num_samples} trials searched on {len(spec.replicates)} replicates, "
            f"{split}; {traces}. Local Ray; MLflow, state and winner in {folder}/")


def demo_folder(path: str) -> Path:
    """The demo's folder, checked before anything heavy is imported (ConfigError: a file is
    in the way, or its parent is missing)."""
    from esper_ab.errors import ConfigError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--dir={path!r} is a file: give a folder for the demo's store, "
                          f"state and winner.yaml (default: {DEMO_DIR})")
    if not folder.resolve().parent.is_dir():
        raise ConfigError(f"--dir={path!r}: its parent folder does not exist: create it, or "
                          f"give another --dir (default: {DEMO_DIR})")
    return folder


def run(args: argparse.Namespace) -> int:
    from esper_ab.errors import ConfigError

    # every argument checked before Ray, MLflow and the stats are imported (seconds)
    if not Path(args.space).is_file():
        raise ConfigError(f"--space={args.space!r} does not exist: run the demo from an "
                          "esper-ab checkout (make demo) or pass --space SPACE.yaml")
    folder = demo_folder(args.dir)
    uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    timeout = schedule_timeout(args)
    from esper_ab.study.spec import load_sweep_spec

    spec = load_sweep_spec(args.space)
    from esper_ab.commands.export import NoWinner, export_winner
    from esper_ab.study.summary import format_summary
    from esper_ab.tracking import SweepTracker
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    preflight_resources(spec, None)
    folder.mkdir(parents=True, exist_ok=True)
    print(_intro(spec, str(folder)), flush=True)
    with progress_for(args) as progress:
        outcome = run_sweep(spec, options=SweepOptions(
            tracking_uri=uri, verbose=args.verbose, cache_dir=str(folder / args.cache_dir),
            schedule_timeout_s=timeout, progress=progress))
    if outcome.confirmation is None:
        print(format_summary(outcome.analysis))
    else:   # the search stage briefly, then the held-out verdict, which is the sweep's
        from esper_ab.study.confirmation import format_confirmation

        search = outcome.analysis
        print(f"Search stage ({len(search.record.trials)} trials on replicates "
              f"{spec.replicates}; optimistic: chosen and tested on the same replicates): "
              f"{search.headline.removeprefix('Verdict: ')}")
        print("\n" + format_confirmation(outcome.confirmation))
    tracker = SweepTracker(uri)
    try:
        path, doc = export_winner(tracker, outcome.experiment, outcome.sweep_run_id,
                                  str(folder / "winner.yaml"))
        print(f"\nwinner.yaml: {path.resolve()} ({doc.evidence.trial}); load it with "
              f"esper_ab.load_gate({str(path)!r})")
    except NoWinner as exc:
        print(f"\nNo winner.yaml written -- {exc}")
    print(f"\nReview it in MLflow: experiment {outcome.experiment!r}, sweep run "
          f"{outcome.sweep_run_id} (report.html under its artifacts).")
    print(ui_hint(tracker.uri, outcome.sweep_run_id))
    return 0
