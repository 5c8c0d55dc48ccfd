"""``esper-ab record``: record the traces of a space's workloads x replicates as Ray tasks."""

from __future__ import annotations

import argparse
import sys

DEFAULT_CACHE = "esper_ab_sweeps/.esper_ab_cache"   # where `esper-ab sweep` caches episodes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="record the traces of a space (episodes as parallel Ray tasks)",
        description="Run every workload x replicate episode of SPACE.yaml (its replicates, and "
                    "confirm.replicates for a multi-fidelity space) as parallel Ray tasks, "
                    "with the space's per-task resources; episodes already in the cache are "
                    "skipped, so an interrupted recording resumes. Writes the tables that "
                    "'esper-ab replay --traces DIR' reads.")
    p.add_argument("space", metavar="SPACE.yaml", help="a search_spaces/*.yaml file")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where the tables go (default: traces/<space name>)")
    p.add_argument("--address", default=None, metavar="A",
                   help="join a Ray cluster (auto, ray://HOST:10001, HOST:6379); default: "
                        "embedded local Ray")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, metavar="DIR",
                   help="episode cache, shared with 'esper-ab sweep' run from the same folder "
                        "(default: %(default)s); on a cluster, storage every node shares")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands.episode import ProgressBar
    from esper_ab.fidelity.recording import record_space
    from esper_ab.sweeps.spec import load_sweep_spec

    spec = load_sweep_spec(args.space)
    if spec.traces.source == "synthetic":
        from esper_ab.errors import ConfigError

        raise ConfigError(f"{args.space}: traces.source is synthetic, nothing to record: use "
                          "source record (or directory) for real episodes")
    reps = sorted(set(spec.replicates) | set(spec.confirm.replicates or []))
    out = args.out or f"traces/{spec.name}"
    bar = ProgressBar(enabled=not args.no_progress and sys.stderr.isatty())
    try:
        res = record_space(spec, out_dir=out, cache_dir=args.cache_dir, address=args.address,
                           replicates=reps, progress=bar)
    finally:
        bar.close()
    devices = ", ".join(sorted(set(res.devices))) or "none (all cached)"
    print(f"{len(res.jobs)} episode(s) of {len(spec.workloads)} workload(s) x {len(reps)} "
          f"replicate(s): {res.recorded} recorded ({res.compute_s:.1f} CPU-s, devices: "
          f"{devices}), {res.cached} from the cache; {res.wall_s:.1f} s")
    print(f"traces: {res.out_dir}  (next: esper-ab replay {args.space} --traces {out})")
    return 0
