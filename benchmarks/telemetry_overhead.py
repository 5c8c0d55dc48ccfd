"""Telemetry overhead: (training step with GradStats collection) / (plain training step).

Both arms run fwd + bwd + AdamW on the same model and batch; the measured arm also calls
``GradientCollector.collect()`` after backward (the per-step path of an episode) and
materializes once per block (the per-epoch sync). One run alternates blocks of the two
arms in pairs whose order flips from pair to pair (AB BA AB ...), so drift hits both arms.
Every block is timed whole; the run's ratio is the median over its block pairs of

    (measured block, its materialize included) / (the plain block next to it)

(a block of 3 steps overstates the materialize share: an epoch has more steps). Pairing
neighbouring blocks cancels the slow drift of a shared machine (once page faults are gone,
see below, successive steps' times correlate at 0.5-0.7), and the median drops the pairs a
preemption hit. Up to commit 4865c51 the ratio was (median measured step + median
materialize / steps) / median plain step, with 20 pairs; it compares steps far apart in
time (still printed as "ratio of medians"). A/A runs of the old benchmark at load ~6 gave
CNN 0.956-1.021 and GPT 1.004-1.012; this one gave 0.996-1.006 and 0.996-1.004.

Each host gets ``--runs`` runs in one invocation (a fresh model each); the line prints
their median and spread, and the *collect share*: median time inside ``collect()`` (plus
the materialize share) over the median plain step, a direct check of the ratio that
contention barely moves. ``--aa`` makes the measured arm plain too: the ratio then shows
the noise floor.

glibc returns the freed activations of every step to the kernel and faults them in again
on the next (on the GPT host ~1,200-1,900 minor page faults and 3-5 ms of system time per
step, varying from step to step in both arms). ``--malloc steady`` (the default) raises
glibc's mmap and trim thresholds before anything is timed, as every episode does while it
trains (``esper_ab.episodes._memory``), so freed memory stays in the process; the step
time's spread went from 4-5% to ~2%. The plain step gets a little faster, so the ratio, if
anything, rises. ``--malloc default`` measures as before.

On the CPU steps are timed at ``--threads`` threads (1 by default) with the process's CPU
clock (``--clock cpu``, the default: ``time.process_time``), or with the wall clock
(``--clock wall``: ``time.perf_counter``). On a machine shared with other work the wall
clock also counts the time the process waits for a core, which lands on random steps
of either arm: at load 8-10 on 2 cores wall-clock runs of the same code scattered from
0.92 to 1.11. CPU time counts only the work the step does (contention still slows it
through the caches, in both arms alike), so it measures the overhead, not the queue.
On CUDA (measured when ``torch.cuda.is_available()``) steps are timed with CUDA
events and there is no host sync inside a block but the measured arm's ``materialize``;
one synchronize after each block's last event reads the events.

    python benchmarks/telemetry_overhead.py [--device auto|cpu|cuda] [--runs 3]
        [--pairs 40] [--steps 3] [--threads 1] [--hosts cnn,gpt] [--aa] [--clock cpu|wall]
        [--malloc steady|default]

Target: ratio <= 1.02 on every host.
"""

from __future__ import annotations

import argparse
import itertools
import operator
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from esper_ab.episodes._memory import MMAP_THRESHOLD, TRIM_THRESHOLD, raise_thresholds
from esper_ab.episodes.hosts import CNNHost, CNNHostConfig, TransformerHost, TransformerHostConfig
from esper_ab.gradients import GradientCollector

Batch = tuple[torch.Tensor, torch.Tensor]


def cnn() -> tuple[nn.Module, Batch]:
    """esper-ab's CNN host (conv-BN-ReLU blocks, 8->16->32 channels, like cifar_baseline)."""
    model = CNNHost(CNNHostConfig(in_channels=3, n_classes=10, base_width=8, n_blocks=3,
                                  image_size=32))
    return model, (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))


def transformer() -> tuple[nn.Module, Batch]:
    """esper-ab's pre-LN GPT host with a tied embedding (width 128, 4 layers)."""
    cfg = TransformerHostConfig(vocab_size=512, context_length=64, width=128, n_layers=4,
                                n_heads=4)
    model = TransformerHost(cfg)
    idx = torch.randint(0, 512, (16, 64))
    return _FlatLogits(model), (idx, torch.randint(0, 512, (16 * 64,)))


class _FlatLogits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model(idx).flatten(0, 1)


HOSTS: dict[str, Callable[[], tuple[nn.Module, Batch]]] = {"cnn": cnn, "gpt": transformer}


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}

# ``--malloc steady``: the thresholds episodes train with (see the module docstring)
STEADY = f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _Clock:
    """Marks on a host clock (process CPU time or wall time), or CUDA events recorded on
    the stream (no host sync)."""

    def __init__(self, device: torch.device, clock: str = "cpu"):
        self.cuda = device.type == "cuda"
        self.host = CLOCKS[clock]

    def mark(self):
        if not self.cuda:
            return self.host()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def settle(self) -> None:
        """Make the marks readable: one synchronize on CUDA, after a block's last mark."""
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a


@dataclass(frozen=True)
class RunResult:
    """One run. ``ratio`` is the figure: the median over block pairs of (measured block,
    its materialize included) / (plain block next to it). ``ratio_of_medians`` is the figure
    up to 4865c51: (median measured step + median materialize / steps) / median plain step.
    ``collect_share`` is the time inside ``collect`` (and the materialize share) over the
    plain step, a direct check of the ratio."""

    ratio: float
    ratio_of_medians: float
    collect_share: float
    plain_s: float
    measured_s: float
    faults_per_step: float             # minor page faults per timed step, both arms


def one_run(build: Callable[[], tuple[nn.Module, Batch]], device: torch.device, *,
            pairs: int, steps: int, aa: bool = False, clock: str = "cpu") -> RunResult:
    torch.manual_seed(0)
    model, (x, y) = build()
    model.to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collector = GradientCollector({"host": model})
    loss_fn = nn.CrossEntropyLoss()
    clock = _Clock(device, clock)
    step_s: dict[bool, list[float]] = {True: [], False: []}
    block_s: dict[bool, list[float]] = {True: [], False: []}   # steps + materialize
    collect_s: list[float] = []
    sync_s: list[float] = []

    def block(measured: bool) -> None:
        collect = measured and not aa
        pending = []
        marks = []  # per step: start, before collect, after collect; then the end
        for _ in range(steps):
            start = clock.mark()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            before = clock.mark()   # both arms mark here, so they differ only by collect()
            if collect:
                pending.append(collector.collect())
            marks.append((start, before, clock.mark()))
            opt.step()
        end = clock.mark()
        if collect:
            collector.materialize(pending)  # the per-epoch sync
        done = clock.mark()
        clock.settle()
        starts = [m[0] for m in marks] + [end]
        step_s[measured].extend(clock.seconds(a, b) for a, b in itertools.pairwise(starts))
        block_s[measured].append(clock.seconds(starts[0], done))
        if measured:
            collect_s.extend(clock.seconds(b, c) for _, b, c in marks)
            sync_s.append(clock.seconds(end, done))

    block(True), block(False)  # warm-up: allocator, layout cache, kernels
    for kept in (*step_s.values(), *block_s.values(), collect_s, sync_s):
        kept.clear()
    faults = minor_faults()
    for p in range(pairs):
        for arm in ((False, True) if p % 2 == 0 else (True, False)):
            block(arm)
    faults = minor_faults() - faults
    plain = statistics.median(step_s[False])
    sync = statistics.median(sync_s) / steps
    measured = statistics.median(step_s[True]) + sync
    return RunResult(ratio=statistics.median(itertools.starmap(
                         operator.truediv, zip(block_s[True], block_s[False], strict=True))),
                     ratio_of_medians=measured / plain,
                     collect_share=(statistics.median(collect_s) + sync) / plain,
                     plain_s=plain, measured_s=measured,
                     faults_per_step=faults / (2 * pairs * steps))


def measure_host(name: str, device: torch.device, *, runs: int, pairs: int, steps: int,
                 aa: bool = False, clock: str = "cpu") -> dict:
    """``runs`` independent runs: the ratio's median, min and max, and the step times."""
    load = os.getloadavg()[0]
    results = [one_run(HOSTS[name], device, pairs=pairs, steps=steps, aa=aa, clock=clock)
               for _ in range(runs)]
    ratios = [r.ratio for r in results]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "runs": ratios, "collect_share": statistics.median(r.collect_share for r in results),
            "of_medians": [r.ratio_of_medians for r in results],
            "faults_per_step": statistics.median(r.faults_per_step for r in results),
            "plain_ms": 1e3 * statistics.median(r.plain_s for r in results),
            "measured_ms": 1e3 * statistics.median(r.measured_s for r in results),
            "load_before": load, "load_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: the CPU, and CUDA too when it is available")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=40, help="block pairs per run")
    ap.add_argument("--steps", type=int, default=3, help="training steps per block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hosts", default="cnn,gpt")
    ap.add_argument("--aa", action="store_true", help="A/A: no collection in either arm")
    ap.add_argument("--clock", default="cpu", choices=sorted(CLOCKS),
                    help="host clock on the CPU device: process CPU time (default) or wall")
    ap.add_argument("--malloc", default="steady", choices=["steady", "default"],
                    help="steady (default): glibc keeps freed memory in the process, as in "
                         "episodes (no page faults per step); default: as is")
    args = ap.parse_args()
    hosts = [h for h in args.hosts.split(",") if h]
    bad = [h for h in hosts if h not in HOSTS]
    if bad or min(args.runs, args.pairs, args.steps, args.threads) < 1:
        print(f"--hosts={args.hosts!r} --runs/--pairs/--steps/--threads: use hosts from "
              f"{','.join(HOSTS)} and positive counts", file=sys.stderr)
        raise SystemExit(2)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device=cuda: torch.cuda.is_available() is False; use --device cpu or auto",
              file=sys.stderr)
        raise SystemExit(2)
    # before any timing; False where this is not glibc
    steady = args.malloc == "steady" and raise_thresholds()
    torch.set_num_threads(args.threads)
    devices = [] if args.device == "cuda" else [torch.device("cpu")]
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"telemetry overhead (torch {torch.__version__}, {args.threads} CPU thread(s); "
          f"{args.runs} runs x {args.pairs} block pairs x {args.steps} steps; CPU steps on the "
          f"{args.clock} clock; malloc {args.malloc}"
          f"{(' (' + STEADY + ')' if steady else ' (not glibc: as is)') if args.malloc == 'steady' else ''}"
          f"; target <= 1.02"
          f"{'; A/A: no collection in either arm' if args.aa else ''})")
    for device in devices:
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"device {device} ({label})")
        for name in hosts:
            r = measure_host(name, device, runs=args.runs, pairs=args.pairs, steps=args.steps,
                             aa=args.aa, clock=args.clock)
            n = sum(p.numel() for p in HOSTS[name]()[0].parameters())
            runs = " ".join(f"{v:.4f}" for v in r["runs"])
            print(f"  {name:<4} params={n:>8,}  plain step {r['plain_ms']:7.2f} ms  with "
                  f"collection {r['measured_ms']:7.2f} ms  ratio median {r['median']:.4f} "
                  f"[min {r['min']:.4f}, max {r['max']:.4f}]  runs: {runs}  collect share "
                  f"{r['collect_share']:.2%}  (ratio of medians, the figure up to 4865c51: "
                  f"{' '.join(f'{v:.4f}' for v in r['of_medians'])}; minor page faults per "
                  f"step {r['faults_per_step']:.0f}; load {r['load_before']:.2f} -> "
                  f"{r['load_after']:.2f})")
    if args.device == "auto" and not torch.cuda.is_available():
        print("device cuda: skipped (torch.cuda.is_available() is False)")


if __name__ == "__main__":
    main()
