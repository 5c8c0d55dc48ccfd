"""Replay throughput: seed-epoch G2 gate decisions per second, decisions table included.

A synthetic trace of S seeds x E epochs x K steps (GradStats columns as episodes write
them) is prepared once, as a replay-fidelity sweep does. Then, for every registered
strategy, ``--configs`` gate configs are drawn the way a sweep samples them -- the
strategy's own parameters from their search ranges (a new exponent, quantile or shrinkage
each time), a threshold, a window, an EMA decay or none, min_epochs -- and each is
replayed with ``replay_decisions``: the statistic of every step, the window, the EMA and
the checks of every seed-epoch, and the decisions table. What configs share (the
statistic of a strategy setting, a window of it, calibration groups) is computed once per
trace and reused, as in a sweep; a config's own parameters are never cached.

One core: numpy runs single-threaded here, and rates are per CPU-second of this process
(``time.process_time``), so other load on the machine does not count against them; the
wall-clock rate is printed next to it.

    python benchmarks/replay_throughput.py [--seeds 4000] [--epochs 20] [--steps 10]
        [--configs 24]

Targets (issue 15): >= 1e7 for baseline/last, >= 5e6 for every strategy that needs no
calibration, >= 1e6 for the calibrating ones.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from esper_ab.errors import EsperABError  # noqa: E402
from esper_ab.gate import GateConfig  # noqa: E402
from esper_ab.gradients import LAYER_TYPES, GradStats  # noqa: E402
from esper_ab.replay import TraceSet, replay_decisions  # noqa: E402
from esper_ab.strategies import ParamSpec, list_strategies, strategy_class  # noqa: E402

BLUEPRINTS = ["norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light",
              "conv_heavy", "noop"]
TARGET_BASELINE, TARGET_PLAIN, TARGET_CALIBRATING = 1e7, 5e6, 1e6


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
    # The noop blueprint has no parameters: its rows are "not applicable".
    noop = cols["blueprint"] == "noop"
    for f in ("sum_sq", "sum_abs", "numel", "n_tensors", "n_with_grad"):
        cols["seed_" + f] = np.where(noop, 0, cols["seed_" + f])
    trace = pd.DataFrame(cols)
    seeds_df = trace.drop_duplicates(["replicate", "seed_id"])[["replicate", "seed_id", "blueprint"]]
    seeds_df = seeds_df.assign(value_acc_pp=rng.normal(0, 1, len(seeds_df)),
                               valuable=lambda d: d["value_acc_pp"] > 1.0)
    return TraceSet(seeds_df.reset_index(drop=True), trace)


def _draw(spec: ParamSpec, rng: np.random.Generator) -> object:
    """A value of one searchable parameter, drawn as a sweep's sampler would."""
    if spec.kind in ("categorical", "bool"):
        choices = spec.choices or (True, False)
        return choices[int(rng.integers(len(choices)))]
    lo, hi = float(spec.low), float(spec.high)
    if spec.kind == "int":
        return int(rng.integers(int(lo), int(hi) + 1))
    if spec.log:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def sweep_configs(strategy: str, n: int, rng: np.random.Generator,
                  window: str | None = None) -> list[GateConfig]:
    cls = strategy_class(strategy)
    out = []
    for _ in range(n):
        out.append(GateConfig(
            strategy=strategy, strategy_params={p.name: _draw(p, rng) for p in cls.PARAMS},
            threshold=_draw(cls.THRESHOLD, rng),
            window=window or ("last", "mean", "median")[int(rng.integers(3))],
            ema_decay=None if rng.random() < 0.5 else float(rng.uniform(0.5, 0.95)),
            min_epochs=int(rng.integers(1, 11))))
    return out


def measure(traces: TraceSet, configs: list[GateConfig], seed_epochs: int) -> dict[str, float]:
    """Replay every config; rates over all but the first (the sweep's steady state) and of
    the first alone (the strategy's statistic computed for the first time)."""
    cpu, wall = [], []
    for cfg in configs:
        c0, w0 = time.process_time(), time.perf_counter()
        replay_decisions(traces, cfg)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    rest_cpu, rest_wall = sum(cpu[1:]), sum(wall[1:])
    n_rest = len(configs) - 1
    return {"cpu": seed_epochs * n_rest / rest_cpu, "wall": seed_epochs * n_rest / rest_wall,
            "first": seed_epochs / cpu[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--configs", type=int, default=24, help="configs per strategy")
    args = ap.parse_args()
    traces = synthetic(args.seeds, args.epochs, args.steps, np.random.default_rng(0))
    c0 = time.process_time()
    traces.arrays()
    prep = time.process_time() - c0
    seed_epochs = args.seeds * args.epochs
    rng = np.random.default_rng(1)
    print(f"replay throughput: {args.seeds} seeds x {args.epochs} epochs x {args.steps} steps "
          f"({len(traces.trace):,} trace rows, {seed_epochs:,} seed-epochs per config); "
          f"one-off layout {prep:.2f} CPU-s; load average {os.getloadavg()[0]:.1f}")
    c0 = time.process_time()
    replay_decisions(traces, GateConfig(threshold=0.1, min_epochs=5))
    first = seed_epochs / (time.process_time() - c0)
    print(f"  first replay on the fresh trace (baseline/last, nothing cached): {first:,.0f} "
          "seed-epochs/CPU-s")
    print(f"  {'strategy':<26}{'seed-epochs/CPU-s':>18}{'wall':>14}{'first config':>14}"
          f"{'target':>9}  met")
    rows = [("baseline/last", sweep_configs("baseline", args.configs, rng, window="last"),
             TARGET_BASELINE)]
    for name in list_strategies():
        target = TARGET_CALIBRATING if strategy_class(name).needs_calibration else TARGET_PLAIN
        rows.append((name, sweep_configs(name, args.configs, rng), target))
    missed = []
    for label, configs, target in rows:
        try:
            r = measure(traces, configs, seed_epochs)
        except EsperABError as exc:
            print(f"  {label:<26}  error: {' '.join(str(exc).split())[:120]}")
            missed.append(label)
            continue
        ok = r["cpu"] >= target
        missed += [] if ok else [label]
        print(f"  {label:<26}{r['cpu']:>18,.0f}{r['wall']:>14,.0f}{r['first']:>14,.0f}"
              f"{target:>9.0e}  {'yes' if ok else 'NO'}")
    print("  (windows last/mean/median, EMA or none, thresholds, min_epochs and each "
          "strategy's own parameters drawn per config; decisions table included)")
    print("every target met" if not missed else f"targets missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
