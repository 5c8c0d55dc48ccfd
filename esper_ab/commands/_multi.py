"""``esper-ab sweep`` of a space with ``fidelity: multi`` (replay search, then closed-loop
confirmation on Ray). Called by ``esper_ab.commands.sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from esper_ab.commands._options import progress_for, schedule_timeout, ui_hint


def run_multi(spec: Any, args: argparse.Namespace) -> int:
    from esper_ab.errors import ConfigError
    from esper_ab.fidelity.multi import MultiFidelityOptions, run_multi_fidelity
    from esper_ab.study.agreement import format_agreement
    from esper_ab.study.summary import format_summary
    from esper_ab.tracking import resolve_tracking_uri

    if getattr(args, "resume", False):
        raise ConfigError("--resume does not apply to fidelity multi: run the same command "
                          "again; recorded episodes and closed-loop runs come from the cache")
    with progress_for(args) as progress:
        out = run_multi_fidelity(spec, options=MultiFidelityOptions(
            address=args.address, tracking_uri=args.tracking_uri,
            storage_dir=args.storage_dir, n_boot=args.n_boot, n_perm=args.n_perm,
            cache_dir=args.cache_dir, schedule_timeout_s=schedule_timeout(args),
            verbose=args.verbose, progress=progress))
    s = out.search
    print(f"replay stage: {s.n_configs} configs in {s.wall_s:.1f} s "
          f"({s.configs_per_s:.0f} configs/s)")
    print(format_summary(out.replay_summary))
    print()
    print(format_agreement(out.agreement, out.rank_agreement,
                           objective=spec.selection.objective))
    print()
    print(out.closed_loop.format_table())
    if out.confirmation is not None:
        from esper_ab.study.confirmation import format_confirmation

        print("\n" + format_confirmation(out.confirmation))
    print(f"\nVerdict (closed loop, authoritative): {out.closed_loop.verdict.reason}")
    c = out.compute
    print(f"compute: {c['episodes_recorded']} episode(s) recorded ({c['episode_cpu_s']:.1f} "
          f"CPU-s), replay {c['replay_search_cpu_s'] + c['replay_finalists_cpu_s']:.1f} CPU-s, "
          f"{c['closed_loop_runs']} closed-loop run(s) ({c['closed_loop_cpu_s']:.1f} CPU-s; "
          f"{c['closed_loop_runs_cached']} cached)")
    print(f"\nMLflow: experiment {out.experiment!r}, sweep run {out.sweep_run_id} "
          "(fidelity/report.html, fidelity/agreement.csv)")
    print(ui_hint(resolve_tracking_uri(args.tracking_uri), out.sweep_run_id))
    return 0
