"""The planted structure of ``synthetic-seq``, measured over 5 replicates (slow: ~80 s).

The one-layer host under-fits the memorized ``table[k, v]`` lookups, so the per-token MLP
seeds are valuable (mean value >= the 1 pp margin, one-sided t-test over replicates, the
replicate being the unit), while the ``attention`` seed -- which cannot learn the in-context
recall within the value horizon -- is harmful against the placebo on average (and below ``mlp_small`` in every replicate).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from scipy import stats

from esper_ab.episodes.runner import episode_config, run_episode

REPLICATES = range(5)


@pytest.mark.slow
def test_mlp_seeds_are_valuable_and_the_attention_seed_is_harmful(tmp_path):
    torch.set_num_threads(1)
    config = episode_config("synthetic-seq", blueprints=("attention", "mlp_small", "mlp"))
    rows = []
    for r in REPLICATES:
        seeds = run_episode(config, replicate=r, cache_dir=tmp_path).seeds.set_index("blueprint")
        rows.append(seeds["value_acc_pp"].to_dict())
    table = pd.DataFrame(rows)
    margin = config.margin_pp
    for bp in ("mlp_small", "mlp"):
        assert table[bp].mean() >= margin, bp
        assert stats.ttest_1samp(table[bp], 0.0, alternative="greater").pvalue < 0.05, bp
    assert table["attention"].mean() <= -margin
    assert stats.ttest_1samp(table["attention"], 0.0, alternative="less").pvalue < 0.05
    # the paired difference between the families, replicate by replicate
    assert (table["mlp_small"] > table["attention"]).all()
    assert (table["placebo"] == 0.0).all()
