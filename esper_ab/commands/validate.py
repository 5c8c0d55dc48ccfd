"""``esper-ab validate``: check a search space file without running anything."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate a search space YAML (exit 2 on a problem)",
                       description="Parse SPACE.yaml against the sweep schema, build its "
                                   "search space, check every workload's plug-in contract "
                                   "(host, slots, blueprints, bit-identity at alpha 0, data "
                                   "determinism; docs/PLUGINS.md) on one batch, check its "
                                   "resources against the cluster a sweep would join and "
                                   "print a summary; any problem is one line on stderr and "
                                   "exit code 2.")
    p.add_argument("space", metavar="SPACE.yaml", help="a search_spaces/*.yaml file")
    p.add_argument("--address", default=None, metavar="A",
                   help="check the resources against the Ray cluster at A (auto, "
                        "ray://HOST:10001, HOST:6379) (default: this machine as local Ray "
                        "would see it, detected without starting Ray; RAY_ADDRESS if set)")
    p.set_defaults(handler=run)


def cluster_plan(spec: object, address: str | None) -> object:
    """The resource plan of ``spec`` where a sweep would run (``ResourceError`` if none)."""
    from esper_ab.study.resources import local_plan

    plan = local_plan(spec.resources, spec.max_concurrent, address)
    if plan is not None:
        return plan
    import ray

    from esper_ab.study.runtime import connect_ray, plan_for_cluster

    started = connect_ray(address)
    try:
        return plan_for_cluster(spec, address)
    finally:
        if started:
            ray.shutdown()


def check_contract(entry: object) -> object:
    """The plug-in contract of one workload entry (``ContractError``: one line)."""
    from esper_ab.episodes.workloads.contracts import check_workload

    return check_workload(entry.workload_config(), slots=entry.slot_list,
                          blueprints=tuple(entry.blueprints))


def run(args: argparse.Namespace) -> int:
    from esper_ab.commands._options import SPACE_FIX, existing_file

    existing_file(args.space, "sweep space", SPACE_FIX)   # before the heavy imports
    import json
    from pathlib import Path

    from esper_ab.study.space import grid_points, space_summary
    from esper_ab.study.spec import load_sweep_spec

    spec = load_sweep_spec(args.space)
    if spec.traces.source == "directory" and not Path(spec.traces.path).is_dir():
        from esper_ab.errors import ConfigError

        raise ConfigError(f"{args.space}: traces.path={spec.traces.path!r:.200} is not a folder "
                          "here: record the traces there first (esper-ab record), or fix it")
    contracts = [check_contract(w) for w in spec.workloads]  # before "ok", like the plan
    plan = cluster_plan(spec, args.address)   # before "ok": a request no node holds fails
    n = len(grid_points(spec)) if spec.sampler.kind == "grid" else spec.num_samples
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in spec.objectives)
    print(f"{args.space}: ok -- sweep {spec.name!r}, experiment {spec.experiment_name!r}, "
          f"fidelity {spec.fidelity}, traces {spec.traces.source}")
    print(f"  {len(spec.workloads)} workload(s): "
          + ", ".join(f"{w.name} slots {w.slot_list} ({_forks(w)})" for w in spec.workloads))
    for c in contracts:
        print(f"  contract of {c.workload}: ok -- slots "
              + ", ".join(f"{s} (width {c.slot_widths[s]})" for s in c.slots)
              + f"; {len(c.blueprints)} blueprints build and keep the host bit-identical; "
              f"data deterministic ({c.n_train} train / {c.n_test} test)")
    print(f"  {len(spec.replicates)} replicates {spec.replicates}, baseline {spec.baseline}")
    print(f"  replicates: {spec.split_text()}")
    print(f"  sampler {spec.sampler.kind}: {n} trials, {spec.max_concurrent} at a time, "
          f"scheduler {spec.scheduler.kind}")
    print(f"  {plan.describe()}")
    print(f"  objective(s): {objectives}")
    print("  search space:")
    for k, v in space_summary(spec).items():
        print(f"    {k}: {json.dumps(v)}")
    return 0


def _forks(entry) -> str:
    """How the workload's episodes measure seed value, and the format (cache key) that gives."""
    from esper_ab.episodes import episode_format

    config = entry.episode_config()
    how = "together" if config.batched_forks else "one at a time"
    return f"value forks {how}, episode format {episode_format(config)}"
