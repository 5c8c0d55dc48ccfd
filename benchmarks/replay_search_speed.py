"""Replay search speed: gate configs searched per second, per sampler kind.

Records (or loads from --cache) tiny synthetic-cnn episodes (8 blueprints, one slot), then
runs ``esper_ab.study.replay_search.search_replay`` -- the in-process Optuna study that
``esper-ab replay`` runs -- over the shipped smoke space (five strategies, conditional
parameters, two windows) for each sampler kind. A config's cost is: the Optuna ask and its
conditional suggestions, the replay of the gate over every replicate (statistic, window,
EMA, checks, decisions table), its share of one batched scoring pass (esper_ab.trial
metrics against the baseline on the same seeds) and of the journal write. Wall and CPU
seconds of the search loop; imports and trace loading are excluded. One core is used.

    python benchmarks/replay_search_speed.py [--configs 2000] [--replicates 6]
        [--samplers random,tpe,nsga2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from esper_ab.episodes.runner import episode_config, run_episode
from esper_ab.replay import ReplayEvidence, TraceSet
from esper_ab.study.replay_search import search_replay
from esper_ab.study.spec import load_sweep_spec

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=2000)
    ap.add_argument("--replicates", type=int, default=6)
    ap.add_argument("--samplers", default="random,tpe,nsga2")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cache", default=None, help="episode cache (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="esper_ab_speed_"))
    config = episode_config("synthetic-cnn", size="tiny", slots=("block2.pre_pool",))
    t0 = time.perf_counter()
    traces = TraceSet.concat([TraceSet.from_episode(run_episode(config, replicate=r, cache_dir=cache))
                              for r in range(args.replicates)])
    evidence = ReplayEvidence(traces)
    print(f"replay search speed: {args.replicates} tiny synthetic-cnn episodes "
          f"({len(evidence.traces.seeds)} seeds, {len(traces.trace):,} trace rows; ready in "
          f"{time.perf_counter() - t0:.1f} s), space {SMOKE.name}, batch {args.batch_size}")
    base = load_sweep_spec(SMOKE)
    for kind in args.samplers.split(","):
        spec = base.model_copy(update={"sampler": base.sampler.model_copy(
            update={"kind": kind})})
        with tempfile.TemporaryDirectory() as folder:
            s = search_replay(spec, evidence, folder=folder, num_samples=args.configs,
                              batch_size=args.batch_size)
        failed = int((s.trials["state"] == "FAIL").sum())
        print(f"  {kind:<7} {s.n_configs} configs in {s.wall_s:6.1f} s wall, "
              f"{s.cpu_s:6.1f} CPU-s: {s.configs_per_s:6.0f} configs/s "
              f"({s.n_configs / s.cpu_s:6.0f} per CPU-s); {failed} not rankable")


if __name__ == "__main__":
    main()
