"""Telemetry overhead: (training step with GradStats collection) / (plain training step).

Both arms run fwd + bwd + AdamW on the same model and batch; the measured arm also calls
``GradientCollector.collect()`` after backward (the per-step path of an episode) and
materializes once per 20 steps (the per-epoch sync). Arms are interleaved in blocks so
drift on a shared machine hits both; the figure is the median of the per-block ratios.

    python benchmarks/telemetry_overhead.py [--device cpu|cuda] [--blocks 15] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from esper_ab.gradients import GradientCollector
from esper_ab.hosts import CNNHost, CNNHostConfig, TransformerHost, TransformerHostConfig


def cnn() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """esper-ab's CNN host (conv-BN-ReLU blocks, 8->16->32 channels, like cifar_baseline)."""
    model = CNNHost(CNNHostConfig(in_channels=3, n_classes=10, base_width=8, n_blocks=3,
                                  image_size=32))
    return model, (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))


def transformer() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
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


def measure(name, build, device, blocks, steps) -> tuple[float, float, float]:
    torch.manual_seed(0)
    model, (x, y) = build()
    model.to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collector = GradientCollector({"host": model})
    loss_fn = nn.CrossEntropyLoss()

    def step(collect: bool, pending: list) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        if collect:
            pending.append(collector.collect())
        opt.step()

    def run(collect: bool) -> float:
        pending: list = []
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(collect, pending)
        if collect:
            collector.materialize(pending)  # the per-epoch sync
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    run(True), run(False)  # warm-up
    ratios, plain, timed = [], [], []
    for b in range(blocks):
        order = (True, False) if b % 2 else (False, True)
        t = {c: run(c) for c in order}
        ratios.append(t[True] / t[False])
        plain.append(t[False] / steps)
        timed.append(t[True] / steps)
    return statistics.median(ratios), statistics.median(plain), statistics.median(timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"telemetry overhead on {device} (torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.blocks} blocks x {args.steps} steps)")
    for name, build in (("cnn", cnn), ("transformer", transformer)):
        ratio, plain, timed = measure(name, build, device, args.blocks, args.steps)
        n = sum(p.numel() for p in build()[0].parameters())
        print(f"  {name:<12} params={n:>9,}  plain step {plain * 1e3:8.2f} ms  with collection "
              f"{timed * 1e3:8.2f} ms  ratio {ratio:.4f}  (target <= 1.02)")


if __name__ == "__main__":
    main()
