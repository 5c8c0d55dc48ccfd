"""Replay throughput: seed-epoch G2 gate decisions per second.

A synthetic trace of S seeds x E epochs x K steps (GradStats columns as episodes write
them) is prepared once, as a replay-fidelity sweep does; each timed replay then computes
the strategy statistic for every step, the window, the EMA and the checks for every
seed-epoch, and builds the decisions table.

    python benchmarks/replay_throughput.py [--seeds 4000] [--epochs 20] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from esper_ab.gate import Gate, GateConfig
from esper_ab.gradients import LAYER_TYPES, GradStats
from esper_ab.replay import TraceSet, decide_rows, replay_decisions

BLUEPRINTS = ["norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light",
              "conv_heavy", "noop"]


def synthetic(seeds: int, epochs: int, steps: int, rng: np.random.Generator) -> TraceSet:
    n = seeds * epochs * steps
    per_rep = len(BLUEPRINTS)
    sid = np.repeat(np.arange(seeds), epochs * steps)
    cols: dict[str, np.ndarray] = {
        "replicate": sid // per_rep, "seed_id": np.array([f"s/{b}" for b in BLUEPRINTS])[sid % per_rep],
        "blueprint": np.array(BLUEPRINTS)[sid % per_rep],
        "epoch": np.tile(np.repeat(np.arange(epochs), steps), seeds),
        "step": np.tile(np.arange(epochs * steps), seeds),
        "first_order": rng.normal(0, 1e-3, n), "grad_out_norm": rng.lognormal(size=n),
        "delta_norm": rng.lognormal(size=n),
    }
    for prefix, numel in (("host_", 6400), ("seed_", 300)):
        sq = rng.lognormal(-6, 1, n) * numel
        for f in GradStats.SCALAR_FIELDS:
            cols[prefix + f] = np.zeros(n)
        cols[prefix + "sum_sq"], cols[prefix + "sum_abs"] = sq, np.sqrt(sq) * 3
        cols[prefix + "numel"] = np.full(n, numel)
        cols[prefix + "n_tensors"] = cols[prefix + "n_with_grad"] = np.full(n, 4)
        for t in LAYER_TYPES:
            share = 0.5 if t in ("conv", "norm") else 0.0
            cols[f"{prefix}{t}_sum_sq"] = sq * share
            cols[f"{prefix}{t}_sum_abs"] = cols[prefix + "sum_abs"] * share
            cols[f"{prefix}{t}_numel"] = np.full(n, int(numel * share))
            cols[f"{prefix}{t}_n_tensors"] = np.full(n, 2 if share else 0)
    trace = pd.DataFrame(cols)
    seeds_df = trace.drop_duplicates(["replicate", "seed_id"])[["replicate", "seed_id", "blueprint"]]
    seeds_df = seeds_df.assign(value_acc_pp=rng.normal(0, 1, len(seeds_df)),
                               valuable=lambda d: d["value_acc_pp"] > 1.0)
    return TraceSet(seeds_df.reset_index(drop=True), trace)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    traces = synthetic(args.seeds, args.epochs, args.steps, np.random.default_rng(0))
    t0 = time.perf_counter()
    arr = traces.arrays()
    prep = time.perf_counter() - t0
    seed_epochs = args.seeds * args.epochs
    print(f"replay throughput: {args.seeds} seeds x {args.epochs} epochs x {args.steps} steps "
          f"({len(traces.trace):,} trace rows); one-off preparation {prep:.2f} s")
    configs = {
        "baseline/last": GateConfig(threshold=0.1, min_epochs=5),
        "exponent/mean+ema": GateConfig(strategy="exponent", strategy_params={"a": 0.3},
                                        threshold=0.1, window="mean", ema_decay=0.9),
        "per_layer_type/median": GateConfig(strategy="per_layer_type", window="median"),
    }
    for name, cfg in configs.items():
        gate = Gate(cfg)
        core, full = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            stat = gate.strategy.statistic_batch(arr.seed, arr.host, arr.context)
            decide_rows(gate, arr, stat.value, stat.state, stat.reason)
            core.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            replay_decisions(traces, cfg)
            full.append(time.perf_counter() - t0)
        print(f"  {name:<22} decisions core {seed_epochs / min(core):>12,.0f} seed-epochs/s   "
              f"with decisions table {seed_epochs / min(full):>12,.0f} seed-epochs/s "
              "(target >= 1e6)")
    cal = GateConfig(strategy="zscore", threshold=0.0)
    t0 = time.perf_counter()
    replay_decisions(traces, cal, folds=2)
    dt = time.perf_counter() - t0
    print(f"  {'zscore (2-fold fit)':<22} with decisions table {seed_epochs / dt:>12,.0f} "
          "seed-epochs/s")


if __name__ == "__main__":
    main()
