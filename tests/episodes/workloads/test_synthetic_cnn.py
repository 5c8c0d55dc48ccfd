"""The planted structure of ``synthetic-cnn``, measured over 5 replicates (slow: ~2 min).

The small ``norm`` seed is truly valuable (mean value >= the 1 pp margin, one-sided t-test
over replicates, the replicate being the unit) while the large ``conv_heavy`` seed is
harmful in every replicate -- and esper-lite's baseline gate passes it anyway.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from scipy import stats

from esper_ab.episodes.runner import episode_config, gate_decisions, run_episode
from esper_ab.gate import Gate

REPLICATES = range(5)


@pytest.mark.slow
def test_small_norm_seed_is_valuable_and_large_conv_heavy_is_harmful(tmp_path):
    torch.set_num_threads(1)
    config = episode_config("synthetic-cnn")
    gate = Gate.from_preset("esper_lite_baseline")
    rows = []
    for r in REPLICATES:
        result = run_episode(config, replicate=r, cache_dir=tmp_path)
        passed = gate_decisions(result, gate).set_index("blueprint")["passed"]
        seeds = result.seeds.set_index("blueprint")
        rows.append({"norm": seeds.loc["norm", "value_acc_pp"],
                     "conv_heavy": seeds.loc["conv_heavy", "value_acc_pp"],
                     "placebo": seeds.loc["placebo", "value_acc_pp"],
                     "conv_heavy_passed": bool(passed["conv_heavy"])})
    table = pd.DataFrame(rows)
    margin = config.margin_pp
    assert table["norm"].mean() >= margin
    assert stats.ttest_1samp(table["norm"], 0.0, alternative="greater").pvalue < 0.05
    assert (table["conv_heavy"] < margin).all() and table["conv_heavy"].mean() <= -margin
    assert (table["placebo"] == 0.0).all()
    assert table["conv_heavy_passed"].mean() >= 0.8  # the gate admits the harmful seed
