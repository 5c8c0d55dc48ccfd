"""``esper-ab record``: record the traces of a space's workloads x replicates as Ray tasks."""

from __future__ import annotations

import argparse

from esper_ab.commands._options import (
    RAY_VERBOSE,
    add_address,
    add_cache_dir,
    add_output,
    add_schedule_timeout,
    preflight_resources,
    preflight_workloads,
    progress_for,
    schedule_timeout,
)


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
    add_address(p)
    add_cache_dir(p)
    add_schedule_timeout(p)
    add_output(p, verbose=RAY_VERBOSE)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands._options import SPACE_FIX, existing_file

    existing_file(args.space, "sweep space", SPACE_FIX)   # before the heavy imports
    from esper_ab.study.recording import record_space
    from esper_ab.study.spec import load_sweep_spec

    timeout = schedule_timeout(args)
    spec = load_sweep_spec(args.space)
    if spec.traces.source == "synthetic":
        from esper_ab.errors import ConfigError

        raise ConfigError(f"{args.space}: traces.source is synthetic, nothing to record: use "
                          "source record (or directory) for real episodes")
    reps = sorted(set(spec.replicates) | set(spec.confirm.replicates or []))
    out = args.out or f"traces/{spec.name}"
    timeout = schedule_timeout(args)
    from esper_ab.study.preflight import check_ray_address, usable_dir

    check_ray_address(args.address)                # before Ray starts: seconds, one line
    preflight_workloads(spec)                      # before any folder is made
    usable_dir(args.cache_dir, "--cache-dir")
    usable_dir(out, "--out")
    preflight_resources(spec, args.address)
    with progress_for(args) as progress:
        res = record_space(spec, out_dir=out, cache_dir=args.cache_dir, address=args.address,
                           replicates=reps, progress=progress, schedule_timeout_s=timeout,
                           verbose=args.verbose)
    devices = ", ".join(sorted(set(res.devices))) or "none (all cached)"
    print(f"{len(res.jobs)} episode(s) of {len(spec.workloads)} workload(s) x {len(reps)} "
          f"replicate(s): {res.recorded} recorded ({res.compute_s:.1f} CPU-s, devices: "
          f"{devices}), {res.cached} from the cache; {res.wall_s:.1f} s")
    print(f"traces: {res.out_dir}  (next: esper-ab replay {args.space} --traces {out})")
    return 0
