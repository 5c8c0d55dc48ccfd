"""An episode's table records the torch thread count and version it was computed with.

Float reductions are split by thread, so the same config and replicate computed with another
intra-op thread count rounds differently, and training amplifies it (measured on the CNN
flagship's replicate 20 with the same code, 1 vs 2 threads: seed values moved by a median
0.15 pp, at most 6.8 pp, and 2 of 27 valuable labels flipped). The cache key leaves the count
out, so the table says it instead.
"""

from __future__ import annotations

import json

import torch

from esper_ab.episodes import episode_config, run_episode


def test_the_episode_json_names_its_threads_and_torch(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = episode_config("synthetic-cnn", size="tiny")
        first = run_episode(cfg, replicate=0, cache_dir=tmp_path)
        assert (first.threads, first.torch_version) == (1, torch.__version__)
        [meta_file] = list((tmp_path / "episodes").glob("*/episode.json"))
        meta = json.loads(meta_file.read_text())
        assert meta["threads"] == 1 and meta["torch"] == torch.__version__
        torch.set_num_threads(2)
        again = run_episode(cfg, replicate=0, cache_dir=tmp_path)   # from the cache
        assert again.timings.loaded
        assert (again.threads, again.torch_version) == (1, torch.__version__)
    finally:
        torch.set_num_threads(before)
