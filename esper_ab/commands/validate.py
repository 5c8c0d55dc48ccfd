"""``esper-ab validate``: check a search space file without running anything."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate a search space YAML (exit 2 on a problem)",
                       description="Parse SPACE.yaml against the sweep schema, build its "
                                   "search space and print a summary; any problem is one line "
                                   "on stderr and exit code 2.")
    p.add_argument("space", metavar="SPACE.yaml", help="a search_spaces/*.yaml file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from esper_ab.sweeps.space import grid_points, space_summary
    from esper_ab.sweeps.spec import load_sweep_spec

    spec = load_sweep_spec(args.space)
    n = len(grid_points(spec)) if spec.sampler.kind == "grid" else spec.num_samples
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in spec.objectives)
    print(f"{args.space}: ok -- sweep {spec.name!r}, experiment {spec.experiment_name!r}, "
          f"fidelity {spec.fidelity}, traces {spec.traces.source}")
    print(f"  {len(spec.workloads)} workload(s): "
          + ", ".join(f"{w.name} slots {w.slot_list}" for w in spec.workloads))
    print(f"  {len(spec.replicates)} replicates {spec.replicates}, baseline {spec.baseline}")
    print(f"  replicates: {spec.split_text()}")
    print(f"  sampler {spec.sampler.kind}: {n} trials, {spec.max_concurrent} at a time, "
          f"resources {spec.resources.cpu:g} CPU + {spec.resources.gpu:g} GPU per trial, "
          f"scheduler {spec.scheduler.kind}")
    print(f"  objective(s): {objectives}")
    print("  search space:")
    for k, v in space_summary(spec).items():
        print(f"    {k}: {json.dumps(v)}")
    return 0
