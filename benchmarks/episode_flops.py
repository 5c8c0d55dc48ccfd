"""The CNN flagship episode's arithmetic against the rate one core reaches on it.

Counts the floating-point work of one host training step (forward + backward, the flagship's
batch) with ``torch.utils.flop_counter`` and times, on one thread, in one run:

- one host step (what pretraining repeats 800 times, and each serial fork 120 times);
- one step of the 28 stacked value forks (``_stacked.StackedCNN``, no seeds); its work is
  28 host steps (the counter misreads grouped convolutions' backward, so it is not used
  there: the stacked network does per fork exactly the host's convolutions);
- a 1024 x 1024 float32 matrix product, the core's GEMM rate, as the reference.

Then the episode's work per phase (pretraining, the forks' training, the held-out
evaluation of every fork with its seed on and off) and the time that work would take at
the GEMM rate: the arithmetic floor of an episode on this core. Last, the stacked forks'
convolution shapes alone (28 groups, the flagship's batch), forward + backward, as the
grouped convolution the forks use and as im2col + batched GEMM over the fork axis.

    python benchmarks/episode_flops.py [--compile]

``--compile`` also times the stacked step under ``torch.compile`` (inductor: its compile
time, then its steps), against the eager step, in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _cpu_time(fn, n: int) -> float:
    for _ in range(3):
        fn()
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true", help="time the stacked step compiled")
    args = ap.parse_args()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from esper_ab.episodes import _stacked
    from esper_ab.episodes.runner import episode_config
    from esper_ab.episodes.workloads import build_workload

    torch.set_num_threads(1)
    config = episode_config("synthetic-cnn",
                            slots=("block1.post_pool", "block2.pre_pool", "block3.pre_pool"))
    workload = build_workload(config.workload, seed=1)
    host = workload.build_host().train()
    x, y = workload.train_x[:config.batch_size], workload.train_y[:config.batch_size]
    k = len(config.seed_keys()) + 1                    # the placebo fork and one per seed

    def host_step() -> None:
        torch.nn.functional.cross_entropy(host(x), y).backward()

    with FlopCounterMode(display=False) as counter:
        host_step()
    step = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            host(x)
    forward_per_sample = counter.get_total_flops() / len(x)
    stacked = _stacked.StackedCNN(host, k)
    hook = _stacked.StackedBlendHook({}, {})

    def stacked_step() -> None:
        _stacked.stacked_loss(stacked(x, hook), y).backward()

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    t_host = _cpu_time(host_step, 50)
    t_stacked = _cpu_time(stacked_step, 10)
    gemm = 2 * 1024 ** 3 / _cpu_time(lambda: a @ b, 20)
    steps = config.steps_per_epoch
    fork_steps = (config.blend_epochs + config.horizon_epochs) * steps
    phases = {
        "pretrain": config.workload.pretrain.steps * step
        * config.workload.pretrain.batch_size / len(x),
        "incubate (host only)": config.incubation_epochs * steps * step,
        "forks' training": fork_steps * k * step,
        "evaluation (seed on and off)": 2 * k * len(workload.test_x) * forward_per_sample,
    }
    print(f"synthetic-cnn flagship episode: {k} forks, batch {len(x)}, one thread, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"host step (forward + backward): {step / 1e6:.1f} MFLOP, {t_host * 1e3:.2f} ms = "
          f"{step / t_host / 1e9:.1f} GFLOP/s")
    print(f"{k} stacked forks, one step: {k * step / 1e6:.0f} MFLOP, {t_stacked * 1e3:.1f} ms = "
          f"{k * step / t_stacked / 1e9:.1f} GFLOP/s")
    print(f"GEMM 1024 x 1024 (float32): {gemm / 1e9:.1f} GFLOP/s")
    total = sum(phases.values())
    for name, flops in phases.items():
        print(f"  {name:<30} {flops / 1e9:6.1f} GFLOP  {flops / gemm:5.2f} s at the GEMM rate")
    print(f"  {'episode':<30} {total / 1e9:6.1f} GFLOP  {total / gemm:5.2f} s at the GEMM rate "
          "(the arithmetic floor on this core)")
    conv_shapes(k, len(x))
    if args.compile:
        def loss(batch):
            return _stacked.stacked_loss(stacked(batch, hook), y)

        t0 = time.process_time()
        compiled = torch.compile(loss)
        compiled(x).backward()
        t_compile = time.process_time() - t0
        eager = _cpu_time(lambda: loss(x).backward(), 20)
        fast = _cpu_time(lambda: compiled(x).backward(), 20)
        print(f"torch.compile of the stacked step: compile {t_compile:.1f} CPU-s (this "
              f"process), then {fast * 1e3:.1f} ms per step against {eager * 1e3:.1f} eager "
              f"({fast / eager:.2f})")


def conv_shapes(k: int, b: int) -> None:
    """Grouped convolution (channels-last, as ``_stacked``) against unfold + bmm, per shape."""
    import torch
    import torch.nn.functional as F

    print(f"the forks' convolutions alone ({k} groups, batch {b}, forward + backward):")
    for cin, cout, hw in ((8, 16, 16), (16, 32, 8), (8, 16, 8), (16, 32, 4)):
        x = torch.randn(b, k * cin, hw, hw).contiguous(
            memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(k * cout, cin, 3, 3).requires_grad_()
        xb = torch.randn(k, b, cin, hw, hw).requires_grad_()
        wb = torch.randn(k, cout, cin * 9).requires_grad_()

        def grouped(x=x, w=w) -> None:
            F.conv2d(x, w, padding=1, groups=k).sum().backward()

        def im2col(xb=xb, wb=wb, cin=cin, hw=hw) -> None:
            cols = F.unfold(xb.reshape(k * b, cin, hw, hw), 3, padding=1)
            cols = cols.reshape(k, b, cin * 9, hw * hw).permute(0, 2, 1, 3)
            torch.bmm(wb, cols.reshape(k, cin * 9, b * hw * hw)).sum().backward()

        flops = 3 * 2 * k * b * cout * cin * 9 * hw * hw      # forward, grad input, grad weight
        tg, ti = _cpu_time(grouped, 10), _cpu_time(im2col, 5)
        print(f"  {cin:>2} -> {cout:>2} channels at {hw:>2} x {hw:<2}: grouped "
              f"{flops / tg / 1e9:5.1f} GFLOP/s, im2col + bmm {flops / ti / 1e9:5.1f} GFLOP/s")


if __name__ == "__main__":
    main()
