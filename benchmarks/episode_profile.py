"""Where an episode's time goes: the CNN flagship's episode phase by phase, in CPU seconds.

The flagship episode is ``synthetic-cnn`` at its three slots (``block1.post_pool``,
``block2.pre_pool``, ``block3.pre_pool``) with the whole catalog: 27 seeds, 28 value forks.
Run cold (no cache), on one thread unless told otherwise, phase by phase:

- ``pretrain``: the host from scratch (800 steps);
- ``incubate``: 27 seeds on one host trajectory, with gradient telemetry (120 steps);
- ``forks``: the value forks' training (28 forks x 120 steps), then ``evaluation`` (two
  held-out passes per fork), one at a time (``serial``) and together (``batched``), from
  the same decision point, in the same process;
- with ``--ops``, the same phases again under ``torch.profiler``: the time inside torch
  operators (their self CPU time: kernels and dispatch) against everything else (Python,
  the autograd engine's bookkeeping, the profiler's own cost).

CPU seconds come from ``time.process_time`` (the machine may be loaded; wall time is
printed too). The batched forks' values are checked against the serial ones.

    python benchmarks/episode_profile.py [--replicate 0] [--threads 1] [--device cpu]
                                         [--ops] [--no-serial] [--mmap]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from contextlib import contextmanager

import numpy as np
import torch

from esper_ab.episodes import _value_forks as value_forks
from esper_ab.episodes._incubation import IncubationSettings, SeedKey, incubate
from esper_ab.episodes._memory import reused_buffers
from esper_ab.episodes._training import pretrain_host
from esper_ab.episodes.runner import episode_config, resolve_device
from esper_ab.episodes.workloads import build_workload

FLAGSHIP_SLOTS = ("block1.post_pool", "block2.pre_pool", "block3.pre_pool")


class Clock:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        c, w = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w


def _timed_evaluate(clock: Clock, name: str):
    """Wrap the fork module's evaluation functions so their time counts under ``name``."""
    originals = (value_forks.evaluate, value_forks.stacked.evaluate_stacked)

    def wrap(fn):
        def timed(*args, **kwargs):
            with clock.phase(name):
                return fn(*args, **kwargs)
        return timed

    value_forks.evaluate = wrap(originals[0])
    value_forks.stacked.evaluate_stacked = wrap(originals[1])
    return originals


def _restore(originals) -> None:
    value_forks.evaluate, value_forks.stacked.evaluate_stacked = originals


def run(args) -> dict:
    """The phases with large buffers kept in the heap, as ``run_episode`` runs them
    (``--mmap`` leaves glibc's defaults: the page faults episodes paid before
    ``episodes._memory``)."""
    if args.mmap:
        return _run(args)
    with reused_buffers():
        return _run(args)


def _run(args) -> dict:
    device = resolve_device(args.device)
    config = episode_config("synthetic-cnn", slots=FLAGSHIP_SLOTS)
    workload = build_workload(config.workload, seed=args.replicate).to(device)
    keys = [SeedKey(s, b) for s in config.resolved_slots for b in config.resolved_blueprints]
    settings = IncubationSettings(
        steps_per_epoch=config.steps_per_epoch, epochs=config.incubation_epochs,
        batch_size=config.batch_size, host_lr=config.host_lr, seed_lr=config.seed_lr,
        weight_decay=config.weight_decay, grad_clip=config.grad_clip)
    forks = value_forks.ForkSettings(
        blend_steps=config.blend_epochs * config.steps_per_epoch,
        horizon_steps=config.horizon_epochs * config.steps_per_epoch,
        ramp=config.ramp, eval_batch_size=config.eval_batch_size)
    clock = Clock()
    with clock.phase("pretrain"):
        start, _ = pretrain_host(workload, replicate=args.replicate, device=device,
                                 cache_dir=None)
    with clock.phase("incubate"):
        incubated = incubate(workload, start, keys, settings, replicate=args.replicate,
                             device=device)
    results = {}
    modes = ["batched"] if args.no_serial else ["serial", "batched"]
    for mode in modes:
        originals = _timed_evaluate(clock, f"evaluation ({mode})")
        try:
            with clock.phase(f"forks+evaluation ({mode})"):
                results[mode] = value_forks.measure_values(
                    workload, incubated, settings, forks, replicate=args.replicate,
                    device=device, batched=mode == "batched")
        finally:
            _restore(originals)
        clock.cpu[f"forks ({mode})"] = (clock.cpu.pop(f"forks+evaluation ({mode})")
                                        - clock.cpu[f"evaluation ({mode})"])
        clock.wall[f"forks ({mode})"] = (clock.wall.pop(f"forks+evaluation ({mode})")
                                         - clock.wall[f"evaluation ({mode})"])
    return {"clock": clock, "results": results, "n_seeds": len(keys),
            "margin_pp": config.margin_pp}


def _compare(results: dict, margin_pp: float) -> str:
    if "serial" not in results:
        return ""
    (c0, o0), (c1, o1) = results["serial"], results["batched"]
    pairs = [(c0, c1)] + [(o0[s], o1[s]) for s in o0]
    d_acc = max(abs(a.heldout_acc - b.heldout_acc) for a, b in pairs)
    d_off = max(abs(a.heldout_acc_seed_off - b.heldout_acc_seed_off) for a, b in pairs)
    d_loss = max(abs(a.heldout_loss - b.heldout_loss) for a, b in pairs)
    flips = sum(int(np.sum(a.correct != b.correct)) for a, b in pairs)
    v0 = {s: 100 * (o0[s].heldout_acc - c0.heldout_acc) for s in o0}
    v1 = {s: 100 * (o1[s].heldout_acc - c1.heldout_acc) for s in o1}
    d_value = max(abs(v0[s] - v1[s]) for s in v0)
    valuable = [s for s in v0 if (v0[s] >= margin_pp) != (v1[s] >= margin_pp)]
    return (f"batched vs serial: max |d acc| {100 * d_acc:.3f} pp, max |d acc seed off| "
            f"{100 * d_off:.3f} pp, max |d loss| {d_loss:.2e}, held-out predictions that "
            f"differ: {flips} of {sum(a.correct.size for a, _ in pairs)}; max |d value| "
            f"{d_value:.3f} pp; valuable (>= {margin_pp:g} pp) in one and not the other: "
            f"{valuable or 'none'} (serial valuable: {sum(v >= margin_pp for v in v0.values())}"
            f" of {len(v0)})")


def _ops_split(args) -> None:
    """The whole episode (batched forks) under torch.profiler: operator self time vs rest."""
    from torch.profiler import ProfilerActivity, profile

    args.no_serial = True
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        w = time.perf_counter()
        run(args)
        total = time.perf_counter() - w      # the profiler's times are wall times
    events = prof.key_averages()
    op_self = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) / 1e6
    print(f"\nunder torch.profiler: {total:.1f} s wall in all, {op_self:.1f} s self time in "
          f"aten operators ({100 * op_self / total:.0f}%), the rest ({total - op_self:.1f} s) "
          "Python, autograd bookkeeping and the profiler itself")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicate", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ops", action="store_true", help="also split operator vs Python time")
    parser.add_argument("--no-serial", action="store_true", help="skip the one-at-a-time forks")
    parser.add_argument("--mmap", action="store_true",
                        help="leave glibc's malloc thresholds as they are (large buffers "
                             "mapped and faulted in anew, as episodes did before)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = run(args)
    clock = out["clock"]
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the CPU-s are inflated on a "
          "loaded machine; compare within one run)")
    print(f"synthetic-cnn flagship episode, {out['n_seeds']} seeds, replicate {args.replicate},"
          f" {args.threads} thread(s), device {args.device}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"process: user {usage.ru_utime:.2f} s, system {usage.ru_stime:.2f} s, "
          f"{usage.ru_minflt} minor page faults (large buffers "
          f"{'mapped anew' if args.mmap else 'kept in the heap'})")
    print(f"{'phase':28s} {'CPU-s':>8s} {'wall s':>8s}")
    for name in clock.cpu:
        print(f"{name:28s} {clock.cpu[name]:8.2f} {clock.wall[name]:8.2f}")
    base = clock.cpu["pretrain"] + clock.cpu["incubate"]
    for mode in ("serial", "batched"):
        if f"forks ({mode})" in clock.cpu:
            total = base + clock.cpu[f"forks ({mode})"] + clock.cpu[f"evaluation ({mode})"]
            print(f"episode with {mode} forks: {total:.2f} CPU-s")
    line = _compare(out["results"], out["margin_pp"])
    if line:
        print(line)
    if args.ops:
        _ops_split(args)


if __name__ == "__main__":
    main()
