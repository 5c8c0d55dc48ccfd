"""``esper-ab replay``: the replay-fidelity search of a space over recorded traces."""

from __future__ import annotations

import argparse

from esper_ab.commands._options import (
    COUNT,
    add_num_samples,
    add_output,
    add_resampling,
    add_storage_dir,
    add_tracking_uri,
    bounded_int,
    progress_for,
    ui_hint,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="search a space at replay fidelity (Optuna in process, seconds)",
        description="Search the strategies of SPACE.yaml by replaying recorded traces: an "
                    "Optuna study in this process (no Ray), thousands of configs in seconds, "
                    "tracked in MLflow like any sweep (tag esper_ab.fidelity=replay; the "
                    "finalists as child runs, the whole trial table as an artifact).")
    p.add_argument("space", metavar="SPACE.yaml", help="a search_spaces/*.yaml file")
    p.add_argument("--traces", required=True, metavar="DIR",
                   help="traces written by 'esper-ab record SPACE.yaml --out DIR'")
    add_num_samples(p, what="configs")
    add_tracking_uri(p)
    add_storage_dir(p)
    p.add_argument("--batch-size", type=COUNT, default=64, metavar="B",
                   help="configs asked and scored together (default: %(default)s)")
    p.add_argument("--finalists", type=bounded_int(1, 10_000), default=None, metavar="K",
                   help="best configs logged as full child runs (default: selection.top_k)")
    add_resampling(p)
    add_output(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands._options import SPACE_FIX, existing_dir, existing_file

    existing_file(args.space, "sweep space", SPACE_FIX)   # before the heavy imports
    existing_dir(args.traces, "--traces", "give the folder that 'esper-ab record SPACE.yaml' "
                 "wrote (default: traces/<sweep name>)")
    from esper_ab.fidelity.replay_sweep import ReplaySweepOptions, run_replay_sweep
    from esper_ab.replay import ReplayEvidence
    from esper_ab.study.recording import load_spec_traces
    from esper_ab.study.replay_search import rank_trials
    from esper_ab.study.spec import load_sweep_spec
    from esper_ab.study.summary import format_summary
    from esper_ab.tracking import resolve_tracking_uri

    spec = load_sweep_spec(args.space).with_overrides(num_samples=args.num_samples)
    progress = progress_for(args)
    options = ReplaySweepOptions(tracking_uri=args.tracking_uri, storage_dir=args.storage_dir,
                                 batch_size=args.batch_size, finalists=args.finalists,
                                 n_boot=args.n_boot, n_perm=args.n_perm, progress=progress)
    traces = load_spec_traces(spec, args.traces)
    evidence = ReplayEvidence(traces, folds=spec.calibration_folds)
    held_out = None
    if spec.confirm_replicates:   # the search sees its own replicates; these stay out of it
        held_out = ReplayEvidence(load_spec_traces(spec, args.traces,
                                                   replicates=spec.confirm_replicates),
                                  folds=spec.calibration_folds)
    with progress:
        out = run_replay_sweep(spec, evidence=evidence, confirm_evidence=held_out,
                               options=options)
    s = out.search
    print(f"replay search: {s.n_configs} configs on {s.n_replicates} replicates in "
          f"{s.wall_s:.1f} s ({s.configs_per_s:.0f} configs/s, {s.cpu_s:.1f} CPU-s), "
          f"sampler {spec.sampler.kind}, study {s.study_name!r}")
    cols = ["number", "label", *[f"g2.{o.metric}" for o in spec.objectives]]
    from esper_ab.console import render_frame

    print()
    print(render_frame(rank_trials(spec, s.trials)[cols].head(10).reset_index(drop=True),
                       counts=("number",), title="Best configs (replay):"))
    print()
    print(format_summary(out.analysis))
    if out.confirmation is not None:   # the held-out verdict is the sweep's
        from esper_ab.study.confirmation import format_confirmation

        print("\n" + format_confirmation(out.confirmation))
    print(f"\nMLflow: experiment {out.experiment!r}, sweep run {out.sweep_run_id} "
          "(fidelity=replay; replay/trials.parquet holds every config)")
    print(ui_hint(resolve_tracking_uri(args.tracking_uri), out.sweep_run_id))
    return 0
