"""Episode wall time per workload, and what the caches save.

For each workload, three runs of the same default episode (one replicate, one CPU thread
unless told otherwise):

- ``cold``: empty cache -- pretrain the host, incubate, run every value fork;
- ``warm host``: the pretrained host comes from the cache (what every later strategy or
  sweep trial pays when it needs a new episode of an already-pretrained replicate);
- ``cached``: the whole result comes from the cache (what a second call costs).

    python benchmarks/episode_time.py [--workloads synthetic-cnn synthetic-seq digits cifar10]
                                      [--cifar-dir DIR] [--size default|tiny] [--device cpu]

Without ``--cifar-dir`` the cifar10 row runs on a generated stand-in folder in the real
pickle format (random pixels: the timing is representative, the accuracy is not).
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from esper_ab.episodes.runner import episode_config, run_episode


def _standin_cifar(folder: Path, n_train: int = 6000, n_test: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        blob = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(blob, fh, protocol=2)
    return folder


def _time(config, cache: Path | None, device: str):
    t, c = time.perf_counter(), time.process_time()
    result = run_episode(config, replicate=0, cache_dir=cache, device=device)
    return time.perf_counter() - t, result, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+",
                        default=["synthetic-cnn", "synthetic-seq", "digits", "cifar10"])
    parser.add_argument("--cifar-dir", default=None)
    parser.add_argument("--size", default="default", choices=("default", "tiny"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="esper-ab-bench-"))
    print(f"device={args.device} threads={torch.get_num_threads()} size={args.size}")
    header = (f"{'workload':<16}{'cold s':>8}{'cold CPU-s':>12}{'pretrain':>10}{'incubate':>10}{'forks':>8}"
              f"{'warm host s':>13}{'cached s':>10}{'x warm':>8}{'x cached':>10}")
    print(header)
    try:
        for name in args.workloads:
            data_dir = None
            label = name
            if name == "cifar10":
                data_dir = args.cifar_dir or str(_standin_cifar(scratch / "cifar"))
                label = name if args.cifar_dir else "cifar10*"
            config = episode_config(name, size=args.size, data_dir=data_dir)
            cache = scratch / f"cache-{name}"
            cold, res, cold_cpu = _time(config, cache, args.device)
            shutil.rmtree(cache / "episodes")  # keep the pretrained host only
            warm, res_warm, _ = _time(config, cache, args.device)
            cached, res_cached, _ = _time(config, cache, args.device)
            assert res_warm.timings.pretrain_cached and res_cached.timings.loaded
            t = res.timings
            print(f"{label:<16}{cold:>8.1f}{cold_cpu:>12.1f}{t.pretrain_s:>10.1f}{t.incubate_s:>10.1f}"
                  f"{t.value_s:>8.1f}{warm:>13.1f}{cached:>10.2f}{cold / warm:>8.2f}"
                  f"{cold / cached:>10.0f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("cifar10*: generated stand-in folder (random pixels), timing only")
    print("wall seconds, and the cold episode's CPU-seconds of this process (what it costs "
          "on a core of its own when the machine is shared)")


if __name__ == "__main__":
    main()
