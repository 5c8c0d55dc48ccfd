"""Episodes per minute on one GPU machine: CPU only, today's ``gpu: auto`` share and the
plan from measured throughput, all measured in one run.

Each arm starts its processes together (spawned, one thread each, cache off), lets each
run a tiny warm-up episode (imports, CUDA context, kernels), releases them at a barrier and
counts the flagship episodes (``synthetic-cnn`` at its three slots, 27 seeds) finished per
minute of wall time:

- ``CPU only``: ``--concurrency`` processes (default: this machine's CPUs) on the CPU;
- ``n per GPU``: ``n`` processes sharing GPU 0, for each ``n`` in ``--shares`` (and
  ``--concurrency`` itself: today's ``gpu: auto`` gives every one of ``max_concurrent``
  trials ``1 / max_concurrent`` of one GPU).

The new plan is ``esper_ab.study.resources.throughput_plan`` on these figures, which keeps
the CPU unless a GPU share is faster. ``--save PATH`` writes them where ``gpu: auto`` reads
them (``$ESPER_AB_GPU_THROUGHPUT`` or ``.esper_ab_cache/gpu_throughput.json``).

    python benchmarks/gpu_throughput.py [--shares 1,4,8] [--concurrency N] [--episodes 1]
        [--size default|tiny] [--save PATH] [--budget-s 400]

One short script: with the defaults on one H100 (16 CPUs) it runs 5 arms of one episode per
process and stops starting arms once ``--budget-s`` has passed (the total stays under 8
minutes). Without CUDA it prints one line and exits 2; ``--allow-cpu`` then runs the GPU
arms on the CPU (a smoke run of the script; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

FLAGSHIP_SLOTS = ("block1.post_pool", "block2.pre_pool", "block3.pre_pool")


def _worker(device: str, size: str, replicates: list[int], barrier, out) -> None:
    import torch

    torch.set_num_threads(1)
    from esper_ab.episodes.runner import episode_config, run_episode

    config = episode_config("synthetic-cnn", size=size, slots=FLAGSHIP_SLOTS)
    warm = episode_config("synthetic-cnn", size="tiny", slots=FLAGSHIP_SLOTS)
    run_episode(warm, replicate=999, cache_dir=None, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    barrier.wait()
    start = time.time()
    for r in replicates:
        run_episode(config, replicate=r, cache_dir=None, device=device)
    out.put((start, time.time(), len(replicates)))


def measure_arm(n: int, device: str, *, size: str, episodes: int, first: int) -> float:
    """Episodes per minute of ``n`` concurrent processes on ``device``."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(device, size, list(
        range(first + i * episodes, first + (i + 1) * episodes)), barrier, out))
        for i in range(n)]
    for p in procs:
        p.start()
    done = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"an episode process exited with {p.exitcode}")
    span = max(d[1] for d in done) - min(d[0] for d in done)
    return 60.0 * sum(d[2] for d in done) / span


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shares", default="1,4,8", help="episodes per GPU to measure")
    ap.add_argument("--concurrency", type=int, default=len(os.sched_getaffinity(0)),
                    help="max_concurrent of the sweep (default: this machine's CPUs)")
    ap.add_argument("--episodes", type=int, default=1, help="episodes per process")
    ap.add_argument("--size", default="default", choices=("default", "tiny"))
    ap.add_argument("--save", default=None, metavar="PATH")
    ap.add_argument("--budget-s", type=float, default=400.0)
    ap.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        shares = sorted({int(s) for s in args.shares.split(",") if s} | {args.concurrency})
    except ValueError:
        shares = []
    if not shares or min(shares) < 1 or args.episodes < 1:
        print(f"--shares={args.shares!r} --concurrency={args.concurrency} "
              f"--episodes={args.episodes}: use positive integers (e.g. --shares 1,4,8)",
              file=sys.stderr)
        return 2
    import torch

    from esper_ab.study.resources import Throughput, auto_gpu_fraction, throughput_plan

    if torch.cuda.is_available():
        gpu_device, machine = "cuda:0", torch.cuda.get_device_name(0)
    elif args.allow_cpu:
        gpu_device, machine = "cpu", "no GPU (smoke run: the GPU arms ran on the CPU)"
    else:
        print("gpu_throughput: CUDA is not available (torch.cuda.is_available() is False): "
              "nothing to measure; run it on a GPU machine", file=sys.stderr)
        return 2
    cpus = len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    print(f"machine: {machine}, {cpus} CPUs, torch {torch.__version__}; flagship episode "
          f"({args.size}), {args.episodes} per process; concurrency {args.concurrency}",
          flush=True)
    n_cpu = min(args.concurrency, cpus)
    cpu_rate = measure_arm(n_cpu, "cpu", size=args.size, episodes=args.episodes, first=0)
    print(f"CPU only, {n_cpu} processes: {cpu_rate:.1f} episodes/min", flush=True)
    gpu: dict[int, float] = {}
    for n in shares:
        if time.perf_counter() - t0 > args.budget_s:
            print(f"{n} per GPU: skipped (past --budget-s {args.budget_s:g})", flush=True)
            continue
        gpu[n] = measure_arm(n, gpu_device, size=args.size, episodes=args.episodes,
                             first=100 * n)
        print(f"{n} per GPU: {gpu[n]:.1f} episodes/min", flush=True)
    tp = Throughput(cpu_per_process=cpu_rate / n_cpu, gpu=gpu, machine=machine)
    today_share = auto_gpu_fraction(args.concurrency, 1.0)
    today_n = round(1 / today_share)
    share, why = throughput_plan(args.concurrency, 1.0, float(cpus), 1.0, tp)
    new_rate = cpu_rate if share == 0 else gpu[round(1 / share)]
    today = gpu.get(today_n)
    print(f"today's plan (gpu: auto, max_concurrent {args.concurrency}: {today_share:g} GPU "
          f"each, {today_n} per GPU): "
          + (f"{today:.1f} episodes/min" if today is not None else "not measured"))
    print(f"new plan: {why}")
    print(f"new plan measured: {new_rate:.1f} episodes/min = {new_rate / cpu_rate:.2f}x CPU "
          "only" + (f", {new_rate / today:.2f}x today's plan" if today else ""))
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(tp.to_json())
        print(f"saved to {args.save}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
