"""``esper-ab episode``: run one replicate, write its tables, print the per-seed summary."""

from __future__ import annotations

import argparse
import math

from esper_ab.commands._options import (
    REPLICATE,
    add_cache_dir,
    add_output,
    bounded_int,
    progress_for,
)

# esper-ab's own workloads (the built-ins of esper_ab.episodes.workloads, checked by a test),
# named here so that a mistyped --workload fails before torch is imported; a plug-in is an
# installed entry point (group esper_ab.workloads) or module:attribute.
WORKLOADS = ("synthetic-cnn", "synthetic-seq", "digits", "cifar10", "esper-lite-cnn")
ENTRY_POINT_GROUP = "esper_ab.workloads"


def check_workload_name(name: str) -> None:
    """A mistyped workload name fails here, in one line, before any heavy import: the name
    must be esper-ab's own, an installed plug-in's entry point, or ``module:attribute``."""
    if ":" in name or name in WORKLOADS:
        return
    from importlib.metadata import entry_points

    installed = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    if name in installed:
        return
    from esper_ab.errors import ConfigError, shown

    known = ", ".join(dict.fromkeys([*WORKLOADS, *installed]))
    raise ConfigError(f"--workload {shown(name)} is unknown: use one of {known}, an installed "
                      "plug-in's name, or module:attribute (docs/PLUGINS.md)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "episode", help="run one replicate of a workload (ground truth + traces)",
        description="Pretrain (cached), incubate every blueprint at once, measure each seed's "
                    "value against a placebo fork, write the seeds/trace tables (parquet) and "
                    "print a per-blueprint summary with the G2 decision of a gate.")
    p.add_argument("--workload", required=True,
                   help="a registered workload (synthetic-cnn, synthetic-seq, digits, cifar10, "
                        "esper-lite-cnn or an installed plug-in's) or module:attribute")
    p.add_argument("--replicate", required=True, type=REPLICATE, help="replicate index (fixes every RNG)")
    p.add_argument("--slot", action="append", default=[],
                   help="slot name (repeatable; default: the workload's default slot)")
    p.add_argument("--out", default="runs/episodes", help="folder for the parquet tables")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda falls back to cpu)")
    p.add_argument("--gate", default="esper_lite_baseline",
                   help="gate preset name or YAML file for the G2 column")
    p.add_argument("--data-dir", default=None,
                   help="for workloads that read a folder (cifar10, esper-lite-cnn): the "
                        "extracted cifar-10-batches-py folder")
    p.add_argument("--size", default="default", choices=("default", "tiny"),
                   help="tiny: a seconds-long smoke episode")
    p.add_argument("--forks", default="batched", choices=("batched", "serial"),
                   help="value forks trained together where the host allows (the CNN host; "
                        "default) or one at a time (every episode before batching)")
    add_cache_dir(p)
    p.add_argument("--closed-loop", action="store_true",
                   help="also run the gate in the loop (each seed blends when it passes)")
    p.add_argument("--threads", type=bounded_int(1, 1024), default=1,
                   help="torch CPU threads (1: the machine is shared)")
    add_output(p)
    p.set_defaults(handler=run)


def _fmt_ratio(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.3g}"


def _true(value: object) -> bool:
    """True only for a real True (pandas NA and None are not True)."""
    return str(value) == "True"




def format_summary(summary, *, gate_name: str) -> str:
    lines = [f"{'slot':<18}{'blueprint':<12}{'params':>8}{'median R_base':>15}"
             f"{'value pp (± se)':>20}{'value loss':>12}  {'valuable':<9}G2 ({gate_name})"]
    for row in summary.itertuples(index=False):
        if row.blueprint == "placebo":
            g2 = "control (not gated)"
        elif _true(row.g2_passed):
            g2 = f"pass @ epoch {int(row.g2_pass_epoch)}"
        else:
            why = row.g2_failed_check
            g2 = f"fail ({why}{'' if row.g2_reason == 'ok' else ': ' + str(row.g2_reason)})"
        dead = "  dead at birth" if _true(row.dead_at_birth) else ""
        value = f"{row.value_acc_pp:+.2f} ± {row.value_acc_se_pp:.2f}"
        lines.append(f"{row.slot:<18}{row.blueprint:<12}{row.n_params:>8}"
                     f"{_fmt_ratio(row.rms_ratio_median):>15}{value:>20}"
                     f"{row.value_loss:>+12.4f}  {'yes' if row.valuable else 'no':<9}{g2}{dead}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import os

    from esper_ab.errors import ConfigError, shown

    check_workload_name(args.workload)
    if args.gate.endswith((".yaml", ".yml")) and not os.path.isfile(args.gate):
        raise ConfigError(f"--gate {shown(args.gate)} does not exist: give a gate file, or a "
                          "preset name (esper-ab strategies lists them)")
    import torch

    from esper_ab.episodes.runner import episode_config, record_episode, run_closed_loop, summarize
    from esper_ab.gate import Gate, load_gate_config
    from esper_ab.study.preflight import usable_dir

    torch.set_num_threads(max(1, args.threads))
    gate = Gate(load_gate_config(args.gate))
    # the workload (a name or module:attribute) and its slots first: a bad one creates no folder
    config = episode_config(args.workload, size=args.size, data_dir=args.data_dir,
                            slots=tuple(args.slot), forks=args.forks)
    usable_dir(args.out, "--out")
    usable_dir(args.cache_dir, "--cache-dir")
    with progress_for(args, min_interval_s=5.0) as progress:   # off a terminal: a line / 5 s
        result = record_episode(config, replicate=args.replicate, out_dir=args.out,
                                cache_dir=args.cache_dir, device=args.device, progress=progress)
    t = result.timings
    source = ("loaded from the cache" if t.loaded else
              f"{t.total_s:.1f} s: pretrain {t.pretrain_s:.1f}"
              f"{' (cached)' if t.pretrain_cached else ''}, incubate {t.incubate_s:.1f}, "
              f"value forks {t.value_s:.1f}, "
              f"{'together' if config.batched_forks else 'one at a time'}")
    print(f"{config.workload.name} replicate {args.replicate} on {result.device} ({source})")
    print(format_summary(summarize(result, gate), gate_name=args.gate))
    prefix = f"{config.workload.name}-r{args.replicate}-"
    print(f"tables: {args.out}/{prefix}seeds.parquet, {args.out}/{prefix}trace.parquet")
    if args.closed_loop:
        with progress_for(args, min_interval_s=5.0) as progress:
            loop = run_closed_loop(config, replicate=args.replicate, gate=gate,
                                   cache_dir=args.cache_dir, device=args.device,
                                   progress=progress)
        print(f"closed loop under {args.gate}:")
        cols = ["slot", "blueprint", "admitted", "blend_epoch", "final_heldout_acc",
                "gain_vs_control_pp"]
        from esper_ab.console import render_frame

        print(render_frame(loop.table[cols].reset_index(drop=True),
                           counts=("slot", "blend_epoch")))
        path = f"{args.out}/{prefix}closed-loop.parquet"
        loop.table.to_parquet(path, index=False)
        print(f"closed-loop table: {path}")
    return 0
