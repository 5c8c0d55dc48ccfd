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


def cnn(width: int = 32) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    try:  # the real esper-style host once the episodes package provides it
        from esper_ab.hosts import CNNHost  # type: ignore[attr-defined]

        model = CNNHost(base_channels=width // 4, n_blocks=3, n_classes=10)
    except Exception:
        layers, c_in = [], 3
        for c in (width // 4, width // 2, width):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c
        model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10))
    return model, (torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)))


class TinyGPT(nn.Module):
    """Stand-in pre-LN transformer with a tied embedding (width 128, 4 layers)."""

    def __init__(self, vocab: int = 512, d: int = 128, layers: int = 4, ctx: int = 64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        mask = nn.Transformer.generate_square_subsequent_mask(idx.shape[1], device=idx.device)
        h = self.blocks(self.tok(idx) + self.pos(pos), mask=mask, is_causal=True)
        return self.head(self.ln(h)).flatten(0, 1)


def transformer() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    idx = torch.randint(0, 512, (16, 64))
    return TinyGPT(), (idx, torch.randint(0, 512, (16 * 64,)))


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
